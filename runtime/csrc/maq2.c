/* maq2.c -- the MAQ family's products and row dequantization: MAQ2 (2-bit / salient 8-bit words) and MAQ3 / MAQ4
 * (3- / 4-bit codes: the MAQ2 2-bit word as the low plane, plus a .hi plane; no salient words, no bitmap).
 *
 * Weight row p (format.py): words uint32 [T/16], scales uint8 [2*ng] (sc uint8 [ng] then m int8 [ng],
 * ng = ceil(T/G)), rowscale half [3] = d, dmin, dsal; and
 *   MAQ2: bitmap uint8 [ceil(T/128)] (bit set = salient word: 4 int8 means);
 *   MAQ3: hi uint16 [T/16], bit j = bit 2 of input j's code            (code q = lo + 4*hi, 0..7);
 *   MAQ4: hi uint32 [T/16], bits 2j..2j+1 = bits 2..3 of input j's code  (code q = lo + 4*hi, 0..15);
 * lo = (word >> 2j) & 3 in all three. Value d*sc[g]*q + dmin*m[g] (2-bit / MAQ3 / MAQ4 words), dsal*c (salient).
 * Activation: the MAQ2 layout of maq_internal.h (int8 x per 128-input block b with float scale dx[b]), shared by
 * all three types.
 *
 * Per block b (128 inputs = 8 words = one bitmap byte), every path computes the same exact integers
 *   D_b = sum over non-salient words w of sc[g(w)] * sum_j q_j(w) * x_j
 *   M_b = sum over non-salient words w of m[g(w)]  * sum_j x_j    (computed as sum_g m_g*XS_g - salient words)
 *   S_b = sum over salient words w of sum_k c_k(w) * s4_k(w)      (MAQ2 only)
 * (MAQ2: |D_b| <= 8*16*3*127*255 < 2^24, |M_b|, |S_b| < 2^22, so the int -> float conversions are exact; MAQ3/4:
 * |D_b| <= 8*16*15*127*255 < 2^26, and (float)D_b is one round-to-nearest of the same integer on every path),
 * then the same float operations in the same order: with lane l = b % 4,
 *   fD[l] += dx[b]*D_b;  fM[l] += dx[b]*M_b;  fS[l] += dx[b]*S_b;
 *   y = d*((fD0+fD1)+(fD2+fD3)) + dmin*((fM0+fM1)+(fM2+fM3)) [+ dsal*((fS0+fS1)+(fS2+fS3)): MAQ2 only]
 * Four lanes let a 128-bit path finish four blocks ("a quad", 512 inputs) with one vector conversion and
 * multiply, and make every path bit-identical to the scalar reference.
 *
 * SIMD inner loop (one 64-input chunk = 4 words = 16 bytes W): V_k = (W >> 2k) & 3 (k = 0..3) holds, in
 * byte 4i+t, the code of weight 4t+k of word i; the activation is stored permuted to match, so
 * maddubs(V_k, x_k) summed over k, then madd with the per-word group scales, gives sc*dot per word.
 * MAQ2: salient words are zeroed first with a mask indexed by their bitmap nibble (branch-free); their own
 * products (rare: ~2.5% of words) run in a scalar loop once per quad that has any, accumulated into
 * vector lanes in registers (a scalar store then vector load round trip would stall store forwarding).
 * MAQ4: the 16 bytes H of the hi plane have the words' 2-bit layout, and V_k = lo_k | hi_k << 2 (0..15) is built
 * two fields at a time: A = (W & 0x33) | (H << 2 & 0xcc) holds codes k = 0 (low nibble) and 2 (high nibble),
 * B = (W >> 2 & 0x33) | (H & 0xcc) codes k = 1 and 3. MAQ3: the chunk's 4 uint16 hi words are split into nibbles
 * (byte 4i+t = the hi bits of inputs 4t..4t+3 of word i) and two 16-entry table lookups (pshufb / tbl) put those
 * bits where a MAQ4 plane has them in A and B (the SSE quad loop splits a full block's 8 uint16 from one 16-byte
 * load: ~8% faster on MAQ3 than one 8-byte load per chunk). Codes <= 15 keep every maddubs / vmull int16 sum exact
 * (4 fields x 2 x 15 x 127 = 15240 < 2^15).
 *
 * Every function that depends on the type takes `const int BITS` (2, 3, 4): the row loops are instantiated per
 * (BITS, G, token tile) with all three compile-time constants, so the MAQ2 code is what it was and the MAQ3/4
 * bodies carry no bitmap or salient work.
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

typedef struct {
    const uint32_t *words;  /* [T/16] */
    const uint8_t *bm;      /* MAQ2: [ceil(T/128)] */
    const uint16_t *hi16;   /* MAQ3: [T/16] */
    const uint32_t *hi32;   /* MAQ4: [T/16] */
    const uint8_t *sc;      /* [ng] */
    const int8_t *m;        /* [ng] */
    float d, dmin, dsal;    /* row scales, converted at row start (off the critical path at the row's end) */
} maq2_row;

typedef struct {            /* one token's activation row, see maq2_act_layout */
    const int8_t *xp;       /* [nb][128] permuted */
    const int8_t *xn;       /* [T] */
    const float *dx;        /* [nb] */
    const int16_t *s4;      /* [T/4] */
    const int16_t *xsg;     /* [ng] sums of x per 2-bit group (xs32, xs64 or xs128 by G) */
    const int8_t *xz;       /* x86-64: [ceil(nb/2)][4][2][32] xp regrouped for 512-bit loads */
} maq2_x;

typedef struct {            /* float lane accumulators: block b -> lane b % 4 */
    float D[4], M[4], S[4];
} maq2_acc;

/* Code width of a MAQ type: 2, 3 or 4 (MAQ_TYPE_MAQ2/3/4 = 100/101/102). */
static inline int type_bits(int type) { return type == MAQ_TYPE_MAQ4 ? 4 : type == MAQ_TYPE_MAQ3 ? 3 : 2; }

/* log2(G) for G in {32, 64, 128}: group of input i = i >> g_shift(G) (no integer division in loops). */
static inline __attribute__((always_inline)) int g_shift(int G) { return G == 32 ? 5 : G == 64 ? 6 : 7; }

static inline __attribute__((always_inline)) void row_init_g(const maq_weight *w, int p, int G, const int BITS,
                                                             maq2_row *r) {
    const int nw = w->T >> 4, nbm = (nw + 7) >> 3, ng = (w->T + G - 1) >> g_shift(G);
    r->words = (const uint32_t *)w->data + (size_t)p * nw;
    r->bm = BITS == 2 ? w->bitmap + (size_t)p * nbm : NULL;
    r->hi16 = BITS == 3 ? (const uint16_t *)w->hi + (size_t)p * nw : NULL;
    r->hi32 = BITS == 4 ? (const uint32_t *)w->hi + (size_t)p * nw : NULL;
    r->sc = w->scales + (size_t)p * 2 * ng;
    r->m = (const int8_t *)(r->sc + ng);
    r->d = maq_h2f(w->rowscale[3 * (size_t)p + 0]);
    r->dmin = maq_h2f(w->rowscale[3 * (size_t)p + 1]);
    r->dsal = maq_h2f(w->rowscale[3 * (size_t)p + 2]);
}

/* Software prefetch of row p's words and hi plane (the bulk of its bytes; see maq_internal.h). */
static inline __attribute__((always_inline)) void prefetch_row(const maq_weight *w, int p, const int BITS) {
    const size_t nw = (size_t)(w->T >> 4);
    maq_prefetch((const uint32_t *)w->data + (size_t)p * nw, 4 * nw);
    if (BITS == 3) maq_prefetch((const uint16_t *)w->hi + (size_t)p * nw, 2 * nw);
    if (BITS == 4) maq_prefetch((const uint32_t *)w->hi + (size_t)p * nw, 4 * nw);
}

static inline void x_init(const maq2_act_layout *L, const uint8_t *row, int G, maq2_x *x) {
    x->xp = (const int8_t *)(row + L->xp);
    x->xn = (const int8_t *)(row + L->xn);
    x->dx = (const float *)(row + L->dx);
    x->s4 = (const int16_t *)(row + L->s4);
    x->xsg = (const int16_t *)(row + (G == 32 ? L->xs32 : G == 64 ? L->xs64 : L->xs128));
    x->xz = (const int8_t *)(row + L->xz);
}

static inline void acc_zero(maq2_acc *a) { memset(a, 0, sizeof(*a)); }

static inline void acc_block(maq2_acc *a, int b, float dx, int32_t D, int32_t M, int32_t S) {
    a->D[b & 3] += dx * (float)D;
    a->M[b & 3] += dx * (float)M;
    a->S[b & 3] += dx * (float)S;
}

/* MAQ3/4 rows have no salient words: S is 0 and dsal (stored 0, never trusted) is not used. */
static inline __attribute__((always_inline)) float acc_final(const maq2_acc *a, const maq2_row *r, const int BITS) {
    const float D = (a->D[0] + a->D[1]) + (a->D[2] + a->D[3]);
    const float M = (a->M[0] + a->M[1]) + (a->M[2] + a->M[3]);
    if (BITS != 2) return r->d * D + r->dmin * M;
    const float S = (a->S[0] + a->S[1]) + (a->S[2] + a->S[3]);
    return r->d * D + r->dmin * M + r->dsal * S;
}

/* Words of block b and its bitmap byte with padding bits cleared (0 for MAQ3/4: no salient words). */
static inline __attribute__((always_inline)) int block_words(int nw, int b) { return nw - 8 * b < 8 ? nw - 8 * b : 8; }
static inline __attribute__((always_inline)) unsigned block_bits(const maq2_row *r, int nw, int b, const int BITS) {
    if (BITS != 2) return 0;
    return r->bm[b] & ((1u << block_words(nw, b)) - 1u);
}

static inline __attribute__((always_inline)) int32_t sal_dot(uint32_t word, const int16_t *s4) {
    return (int32_t)(int8_t)(uint8_t)word * s4[0] + (int32_t)(int8_t)(uint8_t)(word >> 8) * s4[1] +
           (int32_t)(int8_t)(uint8_t)(word >> 16) * s4[2] + (int32_t)(int8_t)(uint8_t)(word >> 24) * s4[3];
}

/* Code of input j of word w: lo + 4*hi (MAQ2: the 2-bit code). */
static inline __attribute__((always_inline)) uint32_t code_of(const maq2_row *r, int w, int j, const int BITS) {
    uint32_t q = (r->words[w] >> (2 * j)) & 3u;
    if (BITS == 3) q += 4u * ((r->hi16[w] >> j) & 1u);
    if (BITS == 4) q += 4u * ((r->hi32[w] >> (2 * j)) & 3u);
    return q;
}

/* Code dot of word w (a 2-bit, MAQ3 or MAQ4 word) with natural-order int8 x (16 inputs). */
static inline __attribute__((always_inline)) int32_t word_dot(const maq2_row *r, int w, const int8_t *x16,
                                                              const int BITS) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += (int32_t)code_of(r, w, j, BITS) * x16[j];
    return s;
}

/* ================================================================== scalar reference */
/* Obviously correct: walks every word with natural-order x and forms D_b, M_b, S_b directly. */
static float row_dot_scalar(const maq2_row *r, const maq2_x *x, int T, int G, int BITS) {
    const int nw = T / 16, nb = (T + 127) / 128;
    maq2_acc a;
    acc_zero(&a);
    for (int b = 0; b < nb; b++) {
        const unsigned bits = BITS == 2 ? block_bits(r, nw, b, 2) : 0u;
        int32_t D = 0, M = 0, S = 0;
        for (int i = 0; i < block_words(nw, b); i++) {
            const int w = 8 * b + i, g = 16 * w / G;
            const uint32_t word = r->words[w];
            const int8_t *x16 = x->xn + 16 * w;
            if (bits >> i & 1u) {
                for (int k = 0; k < 4; k++) {
                    int32_t c = (int8_t)(uint8_t)(word >> (8 * k));
                    S += c * (x16[4 * k] + x16[4 * k + 1] + x16[4 * k + 2] + x16[4 * k + 3]);
                }
            } else {
                int32_t xs = 0, dot = 0;
                for (int j = 0; j < 16; j++) {
                    uint32_t q = (word >> (2 * j)) & 3u;
                    if (BITS == 3) q += 4u * ((r->hi16[w] >> j) & 1u);
                    if (BITS == 4) q += 4u * ((r->hi32[w] >> (2 * j)) & 3u);
                    dot += (int32_t)q * x16[j];
                    xs += x16[j];
                }
                D += (int32_t)r->sc[g] * dot;
                M += (int32_t)r->m[g] * xs;
            }
        }
        acc_block(&a, b, x->dx[b], D, M, S);
    }
    return BITS == 2 ? acc_final(&a, r, 2) : acc_final(&a, r, 3);
}

static void rows_scalar(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0,
                        int p1, float *Y) {
    const int bits = type_bits(w->type);
    for (int p = p0; p < p1; p++) {
        maq2_row r;
        row_init_g(w, p, w->G, bits, &r);
        for (int t = 0; t < B; t++) {
            maq2_x x;
            x_init(L, act + (size_t)t * L->stride, w->G, &x);
            Y[(size_t)t * w->P + p] = row_dot_scalar(&r, &x, w->T, w->G, bits);
        }
    }
}

/* ================================================================== shared by the SIMD paths */
#define MAQ2_NT 4       /* tokens per tile in the batched product: each decoded word is reused NT times */
#define MAQ2_NT_MAX 8   /* the VNNI path's tile (AVX-512VL gives it 32 vector registers); the others keep 4 */

/* The row body of one SIMD path: out[t] = row r . token t's activation, t < NT. Every body is always_inline and
 * takes NT, G and BITS as parameters; row_loop inlines it with all three compile-time constants. */
typedef void (*row_body)(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS);

/* Rows [pa, pb) for a tile of NT tokens: Y[t*P + p]; pf: rows ahead to prefetch (0: none, rows_tiled decides; see
 * maq_internal.h). Inlined with NT, G, BITS and body constant, so everything that depends only on them -- shifts,
 * shuffle patterns, loop bounds, the salient-word code -- is folded or hoisted out of the row loop. */
static inline __attribute__((always_inline)) void row_loop(const maq_weight *w, const maq2_x *x, int pa, int pb,
                                                           float *Y, int pf, const int NT, const int G,
                                                           const int BITS, row_body body) {
    const int T = w->T;
    const size_t P = (size_t)w->P;
    for (int p = pa; p < pb; p++) {
        maq2_row r;
        float o[MAQ2_NT_MAX];
        if (pf && (size_t)(p + pf) < P) prefetch_row(w, p + pf, BITS);   /* past pb: the slot's next chunk */
        row_init_g(w, p, G, BITS, &r);
        body(&r, x, NT, T, G, o, BITS);
        for (int t = 0; t < NT; t++) Y[t * P + p] = o[t];
    }
}

/* row_loop for the weight's group size, each G a compile-time constant in its own branch. */
static inline __attribute__((always_inline)) void row_loop_g(const maq_weight *w, const maq2_x *x, int pa, int pb,
                                                             float *Y, int pf, const int NT, const int BITS,
                                                             row_body body) {
    if (w->G == 32) row_loop(w, x, pa, pb, Y, pf, NT, 32, BITS, body);
    else if (w->G == 64) row_loop(w, x, pa, pb, Y, pf, NT, 64, BITS, body);
    else row_loop(w, x, pa, pb, Y, pf, NT, 128, BITS, body);
}

/* The one driver of every SIMD path: rows [pa, pb) of a BITS-wide type for a tile of nt tokens, 1 <= nt <= NTMAX
 * (1, MAQ2_NT or MAQ2_NT_MAX), with nt a compile-time constant in each branch. A branch past NTMAX is never taken
 * (`nt == NTMAX || ...` ends the chain there), so the compiler drops the rest and the 128-bit bodies keep their
 * MAQ2_NT-token registers. Each path inlines it once per code width (rows_<path>_b2 / _b3 / _b4 below), which keeps
 * functions small enough for the compiler: one function per path for all three widths compiled maq2.c in 69 s
 * instead of 45 s and ran token tiles 5-15 % slower (docs/BENCHMARKS.md, seventh session). */
static inline __attribute__((always_inline)) void rows_drive(const maq_weight *w, const maq2_x *x, int nt, int pa,
                                                             int pb, float *Y, int pf, const int NTMAX,
                                                             const int BITS, row_body body) {
    if (nt == 1 || NTMAX == 1) row_loop_g(w, x, pa, pb, Y, pf, 1, BITS, body);
    else if (nt == 2) row_loop_g(w, x, pa, pb, Y, pf, 2, BITS, body);
    else if (nt == 3) row_loop_g(w, x, pa, pb, Y, pf, 3, BITS, body);
    else if (nt == 4 || NTMAX == MAQ2_NT) row_loop_g(w, x, pa, pb, Y, pf, 4, BITS, body);
    else if (nt == 5) row_loop_g(w, x, pa, pb, Y, pf, 5, BITS, body);
    else if (nt == 6) row_loop_g(w, x, pa, pb, Y, pf, 6, BITS, body);
    else if (nt == 7) row_loop_g(w, x, pa, pb, Y, pf, 7, BITS, body);
    else row_loop_g(w, x, pa, pb, Y, pf, 8, BITS, body);
}

/* A path's rows for one code width: rows_drive with its body, compiled for its instruction set. */
typedef void (*rows_fn)(const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf);

/* pshufb / tbl patterns turning a quad's group scales (byte g = sc of its g-th group) into one int16 per
 * lane: for block j and chunk c, lanes 2i, 2i+1 (bytes 4i..4i+3) carry the scale of word i. 0x80 -> 0.
 * [G: 32, 64, 128][block j of the quad][chunk c][16]; [gi][j] is also the 32-byte AVX2 pattern. */
static const uint8_t SC_SHUF[3][4][2][16] __attribute__((aligned(32))) = {
    {/* G=32 */
     {{0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80}, {2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80}},
     {{4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80, 5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80}, {6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80, 7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80}},
     {{8, 0x80, 8, 0x80, 8, 0x80, 8, 0x80, 9, 0x80, 9, 0x80, 9, 0x80, 9, 0x80}, {10, 0x80, 10, 0x80, 10, 0x80, 10, 0x80, 11, 0x80, 11, 0x80, 11, 0x80, 11, 0x80}},
     {{12, 0x80, 12, 0x80, 12, 0x80, 12, 0x80, 13, 0x80, 13, 0x80, 13, 0x80, 13, 0x80}, {14, 0x80, 14, 0x80, 14, 0x80, 14, 0x80, 15, 0x80, 15, 0x80, 15, 0x80, 15, 0x80}}},
    {/* G=64 */
     {{0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80}, {1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80}},
     {{2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80}, {3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80}},
     {{4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80, 4, 0x80}, {5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80, 5, 0x80}},
     {{6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80, 6, 0x80}, {7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80, 7, 0x80}}},
    {/* G=128 */
     {{0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80}, {0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80, 0, 0x80}},
     {{1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80}, {1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80, 1, 0x80}},
     {{2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80}, {2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80, 2, 0x80}},
     {{3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80}, {3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80, 3, 0x80}}},
};
static inline __attribute__((always_inline)) int g_index(int G) { return G == 32 ? 0 : G == 64 ? 1 : 2; }

/* Lane i all ones <=> bit i of the nibble set (word i of a chunk is salient). [16][4] */
static const uint32_t SAL_MASK[16][4] __attribute__((aligned(16))) = {
    {0, 0, 0, 0}, {~0u, 0, 0, 0}, {0, ~0u, 0, 0}, {~0u, ~0u, 0, 0},
    {0, 0, ~0u, 0}, {~0u, 0, ~0u, 0}, {0, ~0u, ~0u, 0}, {~0u, ~0u, ~0u, 0},
    {0, 0, 0, ~0u}, {~0u, 0, 0, ~0u}, {0, ~0u, 0, ~0u}, {~0u, ~0u, 0, ~0u},
    {0, 0, ~0u, ~0u}, {~0u, 0, ~0u, ~0u}, {0, ~0u, ~0u, ~0u}, {~0u, ~0u, ~0u, ~0u},
};

/* MAQ3: a nibble n of hi bits (bit k = hi bit of the input in field k) -> its bits placed where the MAQ4 high
 * plane would put them in A (k = 0 -> bit 2, k = 2 -> bit 6) and in B (k = 1 -> bit 2, k = 3 -> bit 6).
 * pshufb / tbl lookups; 32 bytes (the AVX2 lanes repeat the table). */
static const uint8_t HI3_A[32] __attribute__((aligned(32))) = {
    0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68,
    0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68};
static const uint8_t HI3_B[32] __attribute__((aligned(32))) = {
    0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68,
    0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68};

/* The group scales of block b as bytes 0..3 of a uint32 (1, 2 or 4 groups; fewer in a ragged block). */
static inline __attribute__((always_inline)) uint32_t block_sc4(const maq2_row *r, int b, int G, int ng) {
    const int gpb = 128 >> g_shift(G), g0 = b * gpb;
    const int n = ng - g0 < gpb ? ng - g0 : gpb;
    uint32_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint32_t)r->sc[g0 + i] << (8 * i);
    return v;
}

/* M_b before salient corrections: sum over the groups of block b of m_g * XS_g. */
static inline __attribute__((always_inline)) int32_t min_block(const maq2_row *r, const maq2_x *x, int b, int G, int ng) {
    const int gpb = 128 >> g_shift(G), g0 = b * gpb;
    const int g1 = g0 + gpb < ng ? g0 + gpb : ng;
    int32_t M = 0;
    for (int g = g0; g < g1; g++) M += (int32_t)r->m[g] * x->xsg[g];
    return M;
}

/* The integers of a (remainder) block b given D = its 4-word chunks' sum: adds tail words past the last full
 * chunk (T/16 % 4 != 0) to *D, and returns M (min term) and S (salient words) in *M, *S. */
static inline __attribute__((always_inline)) void block_ints(const maq2_row *r, const maq2_x *x, int b, int nwb,
                                                             unsigned bits, int G, int ng, int32_t *D, int32_t *M,
                                                             int32_t *S, const int BITS) {
    const int gsh = g_shift(G);
    for (int i = nwb & ~3; i < nwb; i++) {
        const int w = 8 * b + i;
        if (!(bits >> i & 1u)) *D += (int32_t)r->sc[(16 * w) >> gsh] * word_dot(r, w, x->xn + 16 * w, BITS);
    }
    *M = min_block(r, x, b, G, ng);
    *S = 0;
    while (BITS == 2 && bits) {
        const int w = 8 * b + __builtin_ctz(bits);
        bits &= bits - 1;
        const int16_t *s4 = x->s4 + 4 * w;
        *S += sal_dot(r->words[w], s4);
        *M -= (int32_t)r->m[(16 * w) >> gsh] * (s4[0] + s4[1] + s4[2] + s4[3]);
    }
}

/* block_ints, then the float lane update. */
static inline __attribute__((always_inline)) void block_rest(const maq2_row *r, const maq2_x *x, int b, int nwb,
                                                             unsigned bits, int G, int ng, int32_t D, maq2_acc *a,
                                                             const int BITS) {
    int32_t M, S;
    block_ints(r, x, b, nwb, bits, G, ng, &D, &M, &S, BITS);
    acc_block(a, b, x->dx[b], D, M, S);
}

/* ================================================================== SSE (SSSE3 + SSE4.1), x86-64 */
#if defined(MAQ_X86)
#define SSE_FN static inline __attribute__((always_inline, target("ssse3,sse4.1")))

SSE_FN int32_t hsum_epi32_sse(__m128i v) {
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    return _mm_cvtsi128_si32(v);
}

/* MAQ3: the hi bits of words wi..wi+3 as nibbles, byte 4i+t = hi bits of inputs 4t..4t+3 of word i (4 x uint16). */
SSE_FN __m128i hi3_nibbles_sse(const maq2_row *r, int wi) {
    const __m128i h8 = _mm_loadl_epi64((const __m128i *)(r->hi16 + wi));
    return _mm_and_si128(_mm_unpacklo_epi8(h8, _mm_srli_epi16(h8, 4)), _mm_set1_epi8(0x0f));
}
/* The same for the two chunks of a full block (words wi..wi+7) from one 16-byte load. */
SSE_FN void hi3_nibbles2_sse(const maq2_row *r, int wi, __m128i *hn) {
    const __m128i h = _mm_loadu_si128((const __m128i *)(r->hi16 + wi)), hs = _mm_srli_epi16(h, 4);
    hn[0] = _mm_and_si128(_mm_unpacklo_epi8(h, hs), _mm_set1_epi8(0x0f));
    hn[1] = _mm_and_si128(_mm_unpackhi_epi8(h, hs), _mm_set1_epi8(0x0f));
}

/* The chunk of words wi..wi+3 as the four code fields V[k] (byte 4i+t = code of input 4t+k of word i):
 * MAQ2 with salient words (bits of nib) zeroed, MAQ3 / MAQ4 with the hi plane merged in (see the file comment).
 * hn: MAQ3 only, the chunk's hi nibbles (hi3_nibbles_sse). */
SSE_FN void chunk_decode_sse(const maq2_row *r, int wi, unsigned nib, __m128i hn, __m128i *V, const int BITS) {
    const __m128i m3 = _mm_set1_epi8(3);
    __m128i W = _mm_loadu_si128((const __m128i *)(r->words + wi));
    if (BITS != 2) {
        const __m128i m33 = _mm_set1_epi8(0x33), m0f = _mm_set1_epi8(0x0f);
        __m128i A, Bv;   /* codes k = 0 | 2 and k = 1 | 3 (low | high nibble) */
        if (BITS == 4) {
            const __m128i mcc = _mm_set1_epi8((char)0xcc);
            const __m128i H = _mm_loadu_si128((const __m128i *)(r->hi32 + wi));
            A = _mm_or_si128(_mm_and_si128(W, m33), _mm_and_si128(_mm_slli_epi16(H, 2), mcc));
            Bv = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(W, 2), m33), _mm_and_si128(H, mcc));
        } else {
            A = _mm_or_si128(_mm_and_si128(W, m33), _mm_shuffle_epi8(_mm_load_si128((const __m128i *)HI3_A), hn));
            Bv = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(W, 2), m33),
                              _mm_shuffle_epi8(_mm_load_si128((const __m128i *)HI3_B), hn));
        }
        V[0] = _mm_and_si128(A, m0f);
        V[1] = _mm_and_si128(Bv, m0f);
        V[2] = _mm_and_si128(_mm_srli_epi16(A, 4), m0f);
        V[3] = _mm_and_si128(_mm_srli_epi16(Bv, 4), m0f);
        return;
    }
    W = _mm_andnot_si128(_mm_load_si128((const __m128i *)SAL_MASK[nib]), W);
    V[0] = _mm_and_si128(W, m3);
    V[1] = _mm_and_si128(_mm_srli_epi16(W, 2), m3);
    V[2] = _mm_and_si128(_mm_srli_epi16(W, 4), m3);
    V[3] = _mm_and_si128(_mm_srli_epi16(W, 6), m3);
}

/* sum_k maddubs(V_k, x_k) (int16 pairs), times the lane scales sv, pairwise -> int32 sc*dot per word.
 * xk = x_0 of the chunk in the permuted activation; x_k is at xk + 32*k. */
SSE_FN __m128i chunk_dot_sse(const __m128i *V, const int8_t *xk, __m128i sv) {
    __m128i s01 = _mm_add_epi16(_mm_maddubs_epi16(V[0], _mm_load_si128((const __m128i *)xk)),
                                _mm_maddubs_epi16(V[1], _mm_load_si128((const __m128i *)(xk + 32))));
    __m128i s23 = _mm_add_epi16(_mm_maddubs_epi16(V[2], _mm_load_si128((const __m128i *)(xk + 64))),
                                _mm_maddubs_epi16(V[3], _mm_load_si128((const __m128i *)(xk + 96))));
    return _mm_madd_epi16(_mm_add_epi16(s01, s23), sv);
}

/* The quad's min terms [M_0..M_3] for one token, before salient corrections (weight side mw precomputed:
 * G=128: m as int32 x4; G=64: m as int16 x8; G=32: m as int16 x16 in mw, mw2). */
SSE_FN __m128i quad_min_sse(int G, __m128i mw, __m128i mw2, const int16_t *xs, int q) {
    if (G == 128) return _mm_mullo_epi32(mw, _mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(xs + 4 * q))));
    if (G == 64) return _mm_madd_epi16(mw, _mm_loadu_si128((const __m128i *)(xs + 8 * q)));
    return _mm_hadd_epi32(_mm_madd_epi16(mw, _mm_loadu_si128((const __m128i *)(xs + 16 * q))),
                          _mm_madd_epi16(mw2, _mm_loadu_si128((const __m128i *)(xs + 16 * q + 8))));
}

/* Quad weight-side setup shared by SSE and AVX2: group scales of the quad (byte g = its g-th group) and m. */
SSE_FN __m128i quad_sc_sse(const maq2_row *r, int q, int G) {
    const uint8_t *p = r->sc + (size_t)q * (512 >> g_shift(G));
    if (G == 32) return _mm_loadu_si128((const __m128i *)p);
    if (G == 64) return _mm_loadl_epi64((const __m128i *)p);
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128((int)v);
}
SSE_FN void quad_m_sse(const maq2_row *r, int q, int G, __m128i *mw, __m128i *mw2) {
    const int8_t *p = r->m + (size_t)q * (512 >> g_shift(G));
    if (G == 128) {
        uint32_t v;
        memcpy(&v, p, 4);
        *mw = _mm_cvtepi8_epi32(_mm_cvtsi32_si128((int)v));
        *mw2 = *mw;
    } else if (G == 64) {
        *mw = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
        *mw2 = *mw;
    } else {
        const __m128i m16 = _mm_loadu_si128((const __m128i *)p);
        *mw = _mm_cvtepi8_epi16(m16);
        *mw2 = _mm_cvtepi8_epi16(_mm_srli_si128(m16, 8));
    }
}

/* Salient words of full quad q for NT tokens, accumulated in registers: lane j of Sv[t] / Cv[t] gets block j's
 * sum c_k*s4_k / m_g*sum x (no store -> vector load round trip through memory). */
SSE_FN void salient_quad_sse(const maq2_row *r, const maq2_x *x, const int NT, int q, uint32_t bits, int G,
                             __m128i *Sv, __m128i *Cv) {
    const int gsh = g_shift(G);
    while (bits) {
        const int i = __builtin_ctz(bits), w = 32 * q + i, j = i >> 3;
        bits &= bits - 1;
        const uint32_t word = r->words[w];
        const int32_t mg = r->m[(16 * w) >> gsh];
        const __m128i lane = _mm_load_si128((const __m128i *)SAL_MASK[1u << j]);
        for (int t = 0; t < NT; t++) {
            const int16_t *s4 = x[t].s4 + 4 * w;
            Sv[t] = _mm_add_epi32(Sv[t], _mm_and_si128(_mm_set1_epi32(sal_dot(word, s4)), lane));
            Cv[t] = _mm_add_epi32(Cv[t], _mm_and_si128(_mm_set1_epi32(mg * (s4[0] + s4[1] + s4[2] + s4[3])), lane));
        }
    }
}

/* Float lane update of one block b for one token, lane b % 4 of f += dx_b * (D, M, S), done on the vectors: the
 * other lanes add dx*0 = +-0, which leaves them unchanged (a lane is never -0), so this equals the scalar
 * acc_block bit for bit. */
SSE_FN void block_float_sse(float dx, int b, int32_t D, int32_t M, int32_t S, __m128 *f, const int BITS) {
    const __m128 lane = _mm_castsi128_ps(_mm_load_si128((const __m128i *)SAL_MASK[1u << (b & 3)]));
    const __m128 dxv = _mm_and_ps(_mm_set1_ps(dx), lane);
    f[0] = _mm_add_ps(f[0], _mm_mul_ps(dxv, _mm_set1_ps((float)D)));
    f[1] = _mm_add_ps(f[1], _mm_mul_ps(dxv, _mm_set1_ps((float)M)));
    if (BITS == 2) f[2] = _mm_add_ps(f[2], _mm_mul_ps(dxv, _mm_set1_ps((float)S)));
}

/* Remainder blocks (after the full quads) of one row for NT tokens; per block, chunks in SIMD, then
 * block_float_sse. */
SSE_FN void remainder_sse(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, int b0, __m128 f[][3],
                          const int BITS) {
    const int nw = T >> 4, nb = (T + 127) >> 7, ng = (T + G - 1) >> g_shift(G), gi = g_index(G);
    for (int b = b0; b < nb; b++) {
        const int nwb = block_words(nw, b), nc = nwb >> 2;
        const unsigned bits = block_bits(r, nw, b, BITS);
        const __m128i sc4 = _mm_cvtsi32_si128((int)block_sc4(r, b, G, ng));
        __m128i acc[MAQ2_NT_MAX];
        for (int t = 0; t < NT; t++) acc[t] = _mm_setzero_si128();
        for (int c = 0; c < nc; c++) {
            __m128i V[4];
            const __m128i sv = _mm_shuffle_epi8(sc4, _mm_load_si128((const __m128i *)SC_SHUF[gi][0][c]));
            const __m128i hn = BITS == 3 ? hi3_nibbles_sse(r, 8 * b + 4 * c) : _mm_setzero_si128();
            chunk_decode_sse(r, 8 * b + 4 * c, (bits >> (4 * c)) & 15u, hn, V, BITS);
            for (int t = 0; t < NT; t++)
                acc[t] = _mm_add_epi32(acc[t], chunk_dot_sse(V, x[t].xp + 128 * b + 16 * c, sv));
        }
        for (int t = 0; t < NT; t++) {
            int32_t D = hsum_epi32_sse(acc[t]), M, S;
            block_ints(r, &x[t], b, nwb, bits, G, ng, &D, &M, &S, BITS);
            block_float_sse(x[t].dx[b], b, D, M, S, f[t], BITS);
        }
    }
}

/* remainder_sse for one token when the remainder is one 4-word chunk without salient words (T % 512 == 64: SmolLM2's
 * 576-wide rows, where the general loop costs about as much as the quad before it): the same integers D, M (S = 0)
 * by straight-line code, then the same float steps. Returns 0 (nothing done) for any other remainder. */
SSE_FN int remainder1_sse(const maq2_row *r, const maq2_x *x, int T, int G, __m128 f[3], const int BITS) {
    const int b = T >> 7;   /* the last block; its first (only) 4 words end the row */
    if ((T & 511) != 64 || (BITS == 2 && (r->bm[b] & 15u))) return 0;
    const int w0 = 8 * b, g0 = (16 * w0) >> g_shift(G);
    const uint32_t sc4 = G == 32 ? (uint32_t)r->sc[g0] | (uint32_t)r->sc[g0 + 1] << 8 : r->sc[g0];
    __m128i V[4];
    chunk_decode_sse(r, w0, 0, BITS == 3 ? hi3_nibbles_sse(r, w0) : _mm_setzero_si128(), V, BITS);
    const __m128i sv = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)sc4),
                                        _mm_load_si128((const __m128i *)SC_SHUF[g_index(G)][0][0]));
    const int32_t D = hsum_epi32_sse(chunk_dot_sse(V, x->xp + 128 * b, sv));
    int32_t M = (int32_t)r->m[g0] * x->xsg[g0];
    if (G == 32) M += (int32_t)r->m[g0 + 1] * x->xsg[g0 + 1];
    block_float_sse(x->dx[b], b, D, M, 0, f, BITS);
    return 1;
}

/* Float lane update of a quad for one token (MAQ3/4: no salient sums). */
/* The same with D_b already in float (fD = (float)D_b, exactly as the conversion would give it). */
SSE_FN void quad_float_fd_sse(__m128 fD, __m128i Mv, __m128i Sv, const float *dx4, __m128 *f, const int BITS) {
    const __m128 dxv = _mm_load_ps(dx4);
    f[0] = _mm_add_ps(f[0], _mm_mul_ps(dxv, fD));
    f[1] = _mm_add_ps(f[1], _mm_mul_ps(dxv, _mm_cvtepi32_ps(Mv)));
    if (BITS == 2) f[2] = _mm_add_ps(f[2], _mm_mul_ps(dxv, _mm_cvtepi32_ps(Sv)));
}
SSE_FN void quad_float_sse(__m128i Dv, __m128i Mv, __m128i Sv, const float *dx4, __m128 *f, const int BITS) {
    quad_float_fd_sse(_mm_cvtepi32_ps(Dv), Mv, Sv, dx4, f, BITS);
}

SSE_FN float lanes_out_sse(const __m128 *f, const maq2_row *r, const int BITS) {
    maq2_acc a;
    _mm_storeu_ps(a.D, f[0]);
    _mm_storeu_ps(a.M, f[1]);
    _mm_storeu_ps(a.S, f[2]);
    return acc_final(&a, r, BITS);
}

SSE_FN void row_sse_nt(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS) {
    const int nq = T / 512, gi = g_index(G);
    __m128 f[MAQ2_NT][3];
    for (int t = 0; t < NT; t++) f[t][0] = f[t][1] = f[t][2] = _mm_setzero_ps();
    for (int q = 0; q < nq; q++) {
        uint32_t qbits = 0;
        if (BITS == 2) memcpy(&qbits, r->bm + 4 * q, 4);
        const __m128i scq = quad_sc_sse(r, q, G);
        __m128i h[2][MAQ2_NT], prev[MAQ2_NT];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m128i acc[MAQ2_NT], hn[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
            if (BITS == 3) hi3_nibbles2_sse(r, 32 * q + 8 * j, hn);
#pragma GCC unroll 2
            for (int c = 0; c < 2; c++) {
                __m128i V[4];
                const __m128i sv = _mm_shuffle_epi8(scq, _mm_load_si128((const __m128i *)SC_SHUF[gi][j][c]));
                chunk_decode_sse(r, 32 * q + 8 * j + 4 * c, (qbits >> (8 * j + 4 * c)) & 15u, hn[c], V, BITS);
                for (int t = 0; t < NT; t++) {
                    const __m128i d = chunk_dot_sse(V, x[t].xp + 512 * q + 128 * j + 16 * c, sv);
                    acc[t] = c ? _mm_add_epi32(acc[t], d) : d;
                }
            }
            for (int t = 0; t < NT; t++) {
                if (j & 1) h[j >> 1][t] = _mm_hadd_epi32(prev[t], acc[t]);
                else prev[t] = acc[t];
            }
        }
        __m128i mw, mw2;
        quad_m_sse(r, q, G, &mw, &mw2);
        if (!qbits) {
            for (int t = 0; t < NT; t++)
                quad_float_sse(_mm_hadd_epi32(h[0][t], h[1][t]), quad_min_sse(G, mw, mw2, x[t].xsg, q),
                               _mm_setzero_si128(), x[t].dx + 4 * q, f[t], BITS);
        } else {
            __m128i Sv[MAQ2_NT], Cv[MAQ2_NT];
            for (int t = 0; t < NT; t++) Sv[t] = Cv[t] = _mm_setzero_si128();
            salient_quad_sse(r, x, NT, q, qbits, G, Sv, Cv);
            for (int t = 0; t < NT; t++)
                quad_float_sse(_mm_hadd_epi32(h[0][t], h[1][t]),
                               _mm_sub_epi32(quad_min_sse(G, mw, mw2, x[t].xsg, q), Cv[t]), Sv[t], x[t].dx + 4 * q,
                               f[t], BITS);
        }
    }
    remainder_sse(r, x, NT, T, G, 4 * nq, f, BITS);
    for (int t = 0; t < NT; t++) out[t] = lanes_out_sse(f[t], r, BITS);
}

/* ================================================================== AVX2 (256-bit), x86-64 */
#define AVX2_FN static inline __attribute__((always_inline, target("avx2,f16c,ssse3,sse4.1")))

/* Block of 8 words wi..wi+7 as the four code fields (each 128-bit lane = one chunk, as chunk_decode_sse). */
AVX2_FN void block_decode_avx2(const maq2_row *r, int wi, unsigned bits8, __m256i *V, const int BITS) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i W = _mm256_loadu_si256((const __m256i *)(r->words + wi));
    if (BITS != 2) {
        const __m256i m33 = _mm256_set1_epi8(0x33), m0f = _mm256_set1_epi8(0x0f);
        __m256i A, Bv;
        if (BITS == 4) {
            const __m256i mcc = _mm256_set1_epi8((char)0xcc);
            const __m256i H = _mm256_loadu_si256((const __m256i *)(r->hi32 + wi));
            A = _mm256_or_si256(_mm256_and_si256(W, m33), _mm256_and_si256(_mm256_slli_epi16(H, 2), mcc));
            Bv = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(W, 2), m33), _mm256_and_si256(H, mcc));
        } else {
            /* 8 x uint16 -> lane c gets words 4c..4c+3: byte 2n = h[n] & 15, byte 2n+1 = h[n] >> 4 */
            const __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r->hi16 + wi)));
            const __m256i hn = _mm256_and_si256(_mm256_or_si256(h, _mm256_slli_epi16(h, 4)), m0f);
            A = _mm256_or_si256(_mm256_and_si256(W, m33),
                                _mm256_shuffle_epi8(_mm256_load_si256((const __m256i *)HI3_A), hn));
            Bv = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(W, 2), m33),
                                 _mm256_shuffle_epi8(_mm256_load_si256((const __m256i *)HI3_B), hn));
        }
        V[0] = _mm256_and_si256(A, m0f);
        V[1] = _mm256_and_si256(Bv, m0f);
        V[2] = _mm256_and_si256(_mm256_srli_epi16(A, 4), m0f);
        V[3] = _mm256_and_si256(_mm256_srli_epi16(Bv, 4), m0f);
        return;
    }
    /* MAQ2: salient words zeroed (keep lanes whose bitmap bit is clear) */
    const __m256i bitpos = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i keep = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits8), bitpos),
                                            _mm256_setzero_si256());
    W = _mm256_and_si256(W, keep);
    V[0] = _mm256_and_si256(W, m3);
    V[1] = _mm256_and_si256(_mm256_srli_epi16(W, 2), m3);
    V[2] = _mm256_and_si256(_mm256_srli_epi16(W, 4), m3);
    V[3] = _mm256_and_si256(_mm256_srli_epi16(W, 6), m3);
}

/* The VNNI path (AVX-512 VNNI on 256-bit registers, EVEX): the same per-word integers as the AVX2 sum below with
 * vpdpbusd (u8 codes x s8 inputs, 4 products per int32 lane): lane i = dot(word i) over its 16 inputs, |dot| <=
 * 16*15*127 < 2^15, so madd with (sc, 0) pairs gives sc*dot exactly: the lanes the AVX2 code computes, bit for
 * bit. Not always_inline: it is inlined once row_avx2_any sits inside the VNNI-targeted row functions. */
#define MAQ_VNNI_TARGET "avx2,f16c,ssse3,sse4.1,avx512f,avx512bw,avx512vl,avx512vnni"
static inline __attribute__((target(MAQ_VNNI_TARGET))) __m256i block_dot_vnni(const __m256i *V, const int8_t *xk,
                                                                                __m256i svm) {
    /* two independent chains (vpdpbusd latency ~5 cycles): integer sums, so the grouping changes nothing */
    __m256i a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), V[0], _mm256_load_si256((const __m256i *)xk));
    __m256i b = _mm256_dpbusd_epi32(_mm256_setzero_si256(), V[1], _mm256_load_si256((const __m256i *)(xk + 32)));
    a = _mm256_dpbusd_epi32(a, V[2], _mm256_load_si256((const __m256i *)(xk + 64)));
    b = _mm256_dpbusd_epi32(b, V[3], _mm256_load_si256((const __m256i *)(xk + 96)));
    return _mm256_madd_epi16(_mm256_add_epi32(a, b), svm);
}

/* One block's per-word sc*dot for one token, AVX2: int16 pair sums of the four fields, then madd with (sc, sc). */
AVX2_FN __m256i block_dot_avx2(const __m256i *V, const int8_t *xk, __m256i sv) {
    const __m256i s01 = _mm256_add_epi16(_mm256_maddubs_epi16(V[0], _mm256_load_si256((const __m256i *)xk)),
                                         _mm256_maddubs_epi16(V[1], _mm256_load_si256((const __m256i *)(xk + 32))));
    const __m256i s23 = _mm256_add_epi16(_mm256_maddubs_epi16(V[2], _mm256_load_si256((const __m256i *)(xk + 64))),
                                         _mm256_maddubs_epi16(V[3], _mm256_load_si256((const __m256i *)(xk + 96))));
    return _mm256_madd_epi16(_mm256_add_epi16(s01, s23), sv);
}

/* VNNI (compile time): 0 = AVX2 maddubs sums, 1 = vpdpbusd (only inside MAQ_VNNI_TARGET functions). */
AVX2_FN void row_avx2_any(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS,
                          const int VNNI) {
    const int nq = T / 512, gi = g_index(G);
    __m128 f[MAQ2_NT_MAX][3];
    for (int t = 0; t < NT; t++) f[t][0] = f[t][1] = f[t][2] = _mm_setzero_ps();
    for (int q = 0; q < nq; q++) {
        uint32_t qbits = 0;
        if (BITS == 2) memcpy(&qbits, r->bm + 4 * q, 4);
        const __m256i scq = _mm256_broadcastsi128_si256(quad_sc_sse(r, q, G));
        __m256i h[2][MAQ2_NT_MAX], prev[MAQ2_NT_MAX];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i V[4];
            block_decode_avx2(r, 32 * q + 8 * j, (qbits >> (8 * j)) & 255u, V, BITS);
            __m256i sv = _mm256_shuffle_epi8(scq, _mm256_load_si256((const __m256i *)SC_SHUF[gi][j]));
            if (VNNI) sv = _mm256_and_si256(sv, _mm256_set1_epi32(0xffff));   /* (sc, 0) pairs */
            for (int t = 0; t < NT; t++) {
                const int8_t *xk = x[t].xp + 512 * q + 128 * j;
                const __m256i acc = VNNI ? block_dot_vnni(V, xk, sv) : block_dot_avx2(V, xk, sv);
                if (j & 1) h[j >> 1][t] = _mm256_hadd_epi32(prev[t], acc);
                else prev[t] = acc;
            }
        }
        __m128i mw, mw2;
        quad_m_sse(r, q, G, &mw, &mw2);
        __m128i Sv[MAQ2_NT_MAX], Cv[MAQ2_NT_MAX];
        for (int t = 0; t < NT; t++) Sv[t] = Cv[t] = _mm_setzero_si128();
        if (qbits) salient_quad_sse(r, x, NT, q, qbits, G, Sv, Cv);
        for (int t = 0; t < NT; t++) {
            const __m256i d8 = _mm256_hadd_epi32(h[0][t], h[1][t]);   /* [D_j lo half | D_j hi half] */
            const __m128i Dv = _mm_add_epi32(_mm256_castsi256_si128(d8), _mm256_extracti128_si256(d8, 1));
            quad_float_sse(Dv, _mm_sub_epi32(quad_min_sse(G, mw, mw2, x[t].xsg, q), Cv[t]), Sv[t], x[t].dx + 4 * q,
                           f[t], BITS);
        }
    }
    remainder_sse(r, x, NT, T, G, 4 * nq, f, BITS);
    for (int t = 0; t < NT; t++) out[t] = lanes_out_sse(f[t], r, BITS);
}

static __attribute__((noinline, target("ssse3,sse4.1"))) void rows_sse_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 2, row_sse_nt);
}
static __attribute__((noinline, target("ssse3,sse4.1"))) void rows_sse_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 3, row_sse_nt);
}
static __attribute__((noinline, target("ssse3,sse4.1"))) void rows_sse_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 4, row_sse_nt);
}
AVX2_FN void row_avx2_nt(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS) {
    row_avx2_any(r, x, NT, T, G, out, BITS, 0);
}
static inline __attribute__((always_inline, target(MAQ_VNNI_TARGET))) void row_vnni_nt(const maq2_row *r,
                                                                                      const maq2_x *x, const int NT,
                                                                                      int T, int G, float *out,
                                                                                      const int BITS) {
    row_avx2_any(r, x, NT, T, G, out, BITS, 1);
}

/* ------------------------------------------------------------------ AVX-512: single-token rows (VNNI path, B == 1)
 * Decode streams every weight once, so its rows are bound by instructions per weight: here one 512-bit register
 * holds two blocks (16 words, lanes 0-7 block 2h, lanes 8-15 block 2h+1 of the quad), the four code fields of the
 * pair meet the activation's xz regrouping (field k of both blocks: one 64-byte load), vpdpbusd gives each word's
 * dot, a masked add drops MAQ2 salient words (the bitmap's 16 bits are the mask), a madd applies each word's group
 * scale (G = 128: the block's one scale after the fold, in float, exactly), and the quad's two registers fold to
 * [D_0..D_3]: the same exact integers as the AVX2 code, then the same float steps. */
#define MAQ_ZMM_TARGET MAQ_VNNI_TARGET ",gfni"
#define ZMM_FN static inline __attribute__((always_inline, target(MAQ_ZMM_TARGET)))
/* vgf2p8affineqb matrices (GF_BITS: maq_internal.h): GF_NIBBLE_HI: output bits 0-3 = input 4-7. */
#define GF_NIBBLE_HI (0x10ull << 56 | 0x20ull << 48 | 0x40ull << 40 | 0x80ull << 32)

/* Group (index into the quad's scales) of word lane l of pair h, for G = 32, 64, 128: [g_index][h][l]. */
static const int32_t PAIR_GROUP[3][2][16] __attribute__((aligned(64))) = {
    {{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}, {8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15}},
    {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}, {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7}},
    {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3}}};

/* Words wi..wi+15 (two blocks) as the four code fields, each 128-bit lane one chunk (as block_decode_avx2). */
ZMM_FN void pair_decode_zmm(const maq2_row *r, int wi, __m512i *V, const int BITS) {
    const __m512i W = _mm512_loadu_si512((const void *)(r->words + wi));
    if (BITS == 2) {   /* field k = bits 2k, 2k+1 of each byte: one GF(2) affine map per field (GFNI) */
        V[0] = _mm512_and_si512(W, _mm512_set1_epi8(3));
        V[1] = _mm512_gf2p8affine_epi64_epi8(W, _mm512_set1_epi64((long long)GF_BITS(2, 3)), 0);
        V[2] = _mm512_gf2p8affine_epi64_epi8(W, _mm512_set1_epi64((long long)GF_BITS(4, 5)), 0);
        V[3] = _mm512_gf2p8affine_epi64_epi8(W, _mm512_set1_epi64((long long)GF_BITS(6, 7)), 0);
        return;
    }
    const __m512i m33 = _mm512_set1_epi8(0x33), m0f = _mm512_set1_epi8(0x0f);
    __m512i A, Bv;   /* codes k = 0 | 2 and k = 1 | 3 (low | high nibble) */
    if (BITS == 4) {
        const __m512i H = _mm512_loadu_si512((const void *)(r->hi32 + wi));
        /* bit select (ternary-logic 0xca: a ? b : c) with a = 0x33: A = (W & 0x33) | ((H << 2) & 0xcc),
         * B = ((W >> 2) & 0x33) | (H & 0xcc) */
        A = _mm512_ternarylogic_epi32(m33, W, _mm512_slli_epi16(H, 2), 0xca);
        Bv = _mm512_ternarylogic_epi32(m33, _mm512_srli_epi16(W, 2), H, 0xca);
    } else {
        const __m512i h = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(r->hi16 + wi)));
        const __m512i hn = _mm512_and_si512(_mm512_or_si512(h, _mm512_slli_epi16(h, 4)), m0f);
        const __m512i ta = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)HI3_A));
        const __m512i tb = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)HI3_B));
        A = _mm512_or_si512(_mm512_and_si512(W, m33), _mm512_shuffle_epi8(ta, hn));
        Bv = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(W, 2), m33), _mm512_shuffle_epi8(tb, hn));
    }
    V[0] = _mm512_and_si512(A, m0f);
    V[1] = _mm512_and_si512(Bv, m0f);
    V[2] = _mm512_gf2p8affine_epi64_epi8(A, _mm512_set1_epi64((long long)GF_NIBBLE_HI), 0);
    V[3] = _mm512_gf2p8affine_epi64_epi8(Bv, _mm512_set1_epi64((long long)GF_NIBBLE_HI), 0);
}

/* Per-word code dots of a pair (lanes of salient words, bit clear in keep, are 0); xz = field 0 of the pair. */
ZMM_FN __m512i pair_dots_zmm(const __m512i *V, const int8_t *xz, __mmask16 keep) {
    __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), V[0], _mm512_load_si512((const void *)xz));
    __m512i b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), V[1], _mm512_load_si512((const void *)(xz + 64)));
    a = _mm512_dpbusd_epi32(a, V[2], _mm512_load_si512((const void *)(xz + 128)));
    b = _mm512_dpbusd_epi32(b, V[3], _mm512_load_si512((const void *)(xz + 192)));
    return _mm512_maskz_add_epi32(keep, a, b);
}

/* [D_0, D_1, D_2, D_3] of a quad from its pairs' word lanes (z0: blocks 0, 1; z1: blocks 2, 3). */
ZMM_FN __m128i quad_sums_zmm(__m512i z0, __m512i z1) {
    /* 128-bit lane j of t = block j's words 0-3 + words 4-7 */
    const __m512i t = _mm512_add_epi32(_mm512_shuffle_i64x2(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm512_shuffle_i64x2(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i u = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, (_MM_PERM_ENUM)0x4e));
    u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0xb1));
    return _mm512_castsi512_si128(
        _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12), u));
}

ZMM_FN void row_zmm_1(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS) {
    const int nq = T / 512, gi = g_index(G);
    const __m512i lane_g0 = _mm512_load_si512((const void *)PAIR_GROUP[gi][0]);
    const __m512i lane_g1 = _mm512_load_si512((const void *)PAIR_GROUP[gi][1]);
    __m128 f[1][3];
    f[0][0] = f[0][1] = f[0][2] = _mm_setzero_ps();
    (void)NT;   /* 1 */
    for (int q = 0; q < nq; q++) {
        uint32_t qbits = 0;
        if (BITS == 2) memcpy(&qbits, r->bm + 4 * q, 4);
        const __m128i sc = quad_sc_sse(r, q, G);
        __m512i V[4];
        pair_decode_zmm(r, 32 * q, V, BITS);
        __m512i z0 = pair_dots_zmm(V, x->xz + 512 * q, (__mmask16)~qbits);
        pair_decode_zmm(r, 32 * q + 16, V, BITS);
        __m512i z1 = pair_dots_zmm(V, x->xz + 512 * q + 256, (__mmask16)~(qbits >> 16));
        __m128 fD;
        if (G == 128) {
            /* one group per block: D_b = sc_b * (sum of its word dots), formed in float: both factors are exact
             * there (sums < 8*16*15*127 < 2^24, sc <= 255), so the product is one rounding of the exact integer,
             * i.e. (float)D_b as every other path converts it */
            fD = _mm_mul_ps(_mm_cvtepi32_ps(quad_sums_zmm(z0, z1)), _mm_cvtepi32_ps(_mm_cvtepu8_epi32(sc)));
        } else {
            const __m512i scz = _mm512_cvtepu8_epi32(sc);   /* (sc, 0) int16 pairs per group */
            z0 = _mm512_madd_epi16(z0, _mm512_permutexvar_epi32(lane_g0, scz));
            z1 = _mm512_madd_epi16(z1, _mm512_permutexvar_epi32(lane_g1, scz));
            fD = _mm_cvtepi32_ps(quad_sums_zmm(z0, z1));
        }
        __m128i mw, mw2, Sv = _mm_setzero_si128(), Cv = _mm_setzero_si128();
        quad_m_sse(r, q, G, &mw, &mw2);
        if (qbits) salient_quad_sse(r, x, 1, q, qbits, G, &Sv, &Cv);
        quad_float_fd_sse(fD, _mm_sub_epi32(quad_min_sse(G, mw, mw2, x->xsg, q), Cv), Sv, x->dx + 4 * q, f[0], BITS);
    }
    if (!remainder1_sse(r, x, T, G, f[0], BITS)) remainder_sse(r, x, 1, T, G, 4 * nq, f, BITS);
    out[0] = lanes_out_sse(f[0], r, BITS);
}
/* Single tokens only (nt == 1): the VNNI path's rows1_gfni, run where the CPU has GFNI. */
static __attribute__((noinline, target(MAQ_ZMM_TARGET))) void rows_zmm_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, 1, 2, row_zmm_1);
}
static __attribute__((noinline, target(MAQ_ZMM_TARGET))) void rows_zmm_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, 1, 3, row_zmm_1);
}
static __attribute__((noinline, target(MAQ_ZMM_TARGET))) void rows_zmm_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, 1, 4, row_zmm_1);
}

static __attribute__((noinline, target("avx2,f16c,ssse3,sse4.1"))) void rows_avx2_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 2, row_avx2_nt);
}
static __attribute__((noinline, target("avx2,f16c,ssse3,sse4.1"))) void rows_avx2_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 3, row_avx2_nt);
}
static __attribute__((noinline, target("avx2,f16c,ssse3,sse4.1"))) void rows_avx2_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 4, row_avx2_nt);
}
/* Token tiles up to MAQ2_NT_MAX; single tokens too on CPUs without GFNI. */
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void rows_vnni_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT_MAX, 2, row_vnni_nt);
}
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void rows_vnni_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT_MAX, 3, row_vnni_nt);
}
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void rows_vnni_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT_MAX, 4, row_vnni_nt);
}

/* ------------------------------------------------------------------ VNNI panels: prompt processing (panel_pays)
 * The row bodies above decode every word again for each token tile and reduce each row's lanes per tile. Here a
 * 16-row panel is unpacked once into code bytes laid out as the u8 operand of vpdpbusd, one row per int32 lane:
 *   codes uint8 [T/4][16 rows][4]   codes[64k + 4r + i] = code of input 4k + i of panel row r (rows past the
 *                                   weight's last: 0)
 * and every token tile of up to MAQ2_PANEL_NT tokens runs over it: per 4 inputs one 64-byte load of the panel and,
 * per token, one vpdpbusd with the token's 4 natural-order int8 inputs (xn) broadcast -- each weight byte loaded
 * serves NT tokens and each activation load 16 rows, and no lane is reduced. Per group g the code dots C (exact
 * int32) give D_b += sc[g] * C and M_b += m[g] * XS_g (the layout's int8 group sums); per block the float steps
 * of acc_block and acc_final with lanes = rows: bit-identical to the scalar reference. MAQ2 salient words (mean4
 * or int8 coding: the bitmap's words) have code 0 in the panel and are listed per block; a tile takes them out of
 * M_b (m[g] * their input sum, which XS_g holds) and forms S_b from them (their 4 means x the 4-input sums s4),
 * per row and token in integers. */
#define MAQ2_PANEL_NT 8
/* Whether B tokens of a T-input product run panels. Unpacking a panel costs about as much as 20 tokens of its
 * products; the row functions are fast where T is a multiple of 512 (whole quads) and slow otherwise (their
 * 64-input remainders run 128-bit code): measured crossover B ~ 8 for T = 576, ~ 32 for T = 1536 / 4096 (1 thread,
 * MAQ2 / MAQ4, docs/BENCHMARKS.md "Prompt panels"). */
static inline int panel_pays(int T, int B) { return B >= (T % 512 ? 8 : 32); }
#define PANEL_FN static inline __attribute__((always_inline, target(MAQ_VNNI_TARGET)))

typedef struct {             /* a MAQ2 salient word of the panel */
    uint32_t word;           /* its slot: 4 int8 means (or the int8 coding's fp16 scale, read the same way) */
    uint32_t wi;             /* word index in the row */
    uint32_t r;              /* panel row */
} maq2_panel_sal;

typedef struct {
    uint8_t *codes;          /* [T/4][16][4] */
    int32_t *sc, *m;         /* [ng][16]: the rows' group scales and minima */
    float d[16], dmin[16], dsal[16];
    maq2_panel_sal *sal;     /* [16 * T/16] salient words, block by block (row, then word order within a block) */
    maq2_panel_sal *tmp;     /* [16 * T/16] scratch of the block sort */
    int *sal_start;          /* [nb + 1]: block b's words are sal[sal_start[b] .. sal_start[b + 1]) */
} maq2_panel;

#define PANEL_ZMM_FN static inline __attribute__((always_inline, target(MAQ_ZMM_TARGET)))
/* r[j] <- column j of the 16 x 16 int32 matrix whose rows are r[0..15]. */
PANEL_ZMM_FN void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {   /* u[4i + c], 128-bit lane L: rows 4i..4i+3 of column 4L + c */
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 4; c++) {
            t[8 * i + c] = _mm512_shuffle_i32x4(u[8 * i + c], u[8 * i + 4 + c], 0x88);
            t[8 * i + 4 + c] = _mm512_shuffle_i32x4(u[8 * i + c], u[8 * i + 4 + c], 0xdd);
        }
    for (int c = 0; c < 8; c++) {
        r[c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0x88);
        r[c + 8] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0xdd);
    }
}

/* Whole pairs of blocks (16 words, 256 inputs) of the nr rows of a MAQ3 / MAQ4 panel with GFNI: the single-token
 * rows' pair decode gives, in byte 4w + t of V[k], the code of input 4t + k of word w; a 4 x 4 byte transpose per
 * dword (unpacks of V[0..3]) and a 128-bit lane transpose make a row's 64 dwords (inputs 4k..4k+3, k = 0..63) in
 * order, staged [16 rows][64]; 16 x 16 dword transposes turn them into the panel's [k][16 rows]. */
static __attribute__((noinline, target(MAQ_ZMM_TARGET))) void panel_pairs_zmm(const maq_weight *w, int pa, int nr,
                                                                           const int BITS, uint32_t *c32) {
    const int npair = w->T >> 8;
    _Alignas(64) uint32_t stage[16][64];
    memset(stage, 0, sizeof stage);   /* rows past nr stay 0 */
    for (int h = 0; h < npair; h++) {
        for (int r = 0; r < nr; r++) {
            maq2_row row;
            row_init_g(w, pa + r, w->G, BITS, &row);
            __m512i V[4];
            if (BITS == 3) pair_decode_zmm(&row, 16 * h, V, 3);
            else pair_decode_zmm(&row, 16 * h, V, 4);
            const __m512i a = _mm512_unpacklo_epi8(V[0], V[1]), b = _mm512_unpacklo_epi8(V[2], V[3]);
            const __m512i c = _mm512_unpackhi_epi8(V[0], V[1]), d = _mm512_unpackhi_epi8(V[2], V[3]);
            /* o_j, 128-bit lane L: word 4L + j, t = 0..3 */
            const __m512i o0 = _mm512_unpacklo_epi16(a, b), o1 = _mm512_unpackhi_epi16(a, b);
            const __m512i o2 = _mm512_unpacklo_epi16(c, d), o3 = _mm512_unpackhi_epi16(c, d);
            const __m512i e0 = _mm512_shuffle_i64x2(o0, o1, 0x44), e1 = _mm512_shuffle_i64x2(o2, o3, 0x44);
            const __m512i e2 = _mm512_shuffle_i64x2(o0, o1, 0xee), e3 = _mm512_shuffle_i64x2(o2, o3, 0xee);
            _mm512_store_si512((void *)&stage[r][0], _mm512_shuffle_i64x2(e0, e1, 0x88));    /* words 0-3 */
            _mm512_store_si512((void *)&stage[r][16], _mm512_shuffle_i64x2(e0, e1, 0xdd));   /* words 4-7 */
            _mm512_store_si512((void *)&stage[r][32], _mm512_shuffle_i64x2(e2, e3, 0x88));   /* words 8-11 */
            _mm512_store_si512((void *)&stage[r][48], _mm512_shuffle_i64x2(e2, e3, 0xdd));   /* words 12-15 */
        }
        for (int q = 0; q < 4; q++) {
            __m512i m[16];
            for (int r = 0; r < 16; r++) m[r] = _mm512_load_si512((const void *)&stage[r][16 * q]);
            transpose16(m);
            for (int j = 0; j < 16; j++)
                _mm512_store_si512((void *)(c32 + (size_t)16 * (64 * h + 16 * q + j)), m[j]);
        }
    }
}

#define PANEL_UNPACK_FN static inline __attribute__((always_inline, target(MAQ_VNNI_TARGET ",bmi2")))
/* The panel of rows [pa, pa + nr), nr <= 16. A word's 16 codes by bit deposits (BMI2; every AVX-512 CPU has it):
 * nibble j of c = lo field j (+ 4 x its hi bits), then the bytes of inputs 0-7 and 8-15 from its two 32-bit halves;
 * MAQ2 salient words: codes 0 and an entry in pn->sal. */
PANEL_UNPACK_FN void panel_unpack(const maq_weight *w, int pa, int nr, const int BITS, maq2_panel *pn) {
    const int T = w->T, nw = T >> 4, G = w->G, ng = (T + G - 1) >> g_shift(G), nb = (T + 127) >> 7;
    int nsal = 0;
    uint32_t *c32 = (uint32_t *)pn->codes;   /* [T/4][16] */
    if (nr < 16) {
        memset(pn->codes, 0, (size_t)16 * T);
        memset(pn->sc, 0, (size_t)64 * ng);
        memset(pn->m, 0, (size_t)64 * ng);
    }
    for (int r = 0; r < 16; r++) pn->d[r] = pn->dmin[r] = pn->dsal[r] = 0.0f;
    const int w0 = BITS != 2 && maq_cpu_gfni() ? 16 * (nw >> 4) : 0;   /* words done by panel_pairs_zmm */
    if (w0) panel_pairs_zmm(w, pa, nr, BITS, c32);
    for (int r = 0; r < nr; r++) {
        maq2_row row;
        row_init_g(w, pa + r, G, BITS, &row);
        uint32_t *dst = c32 + r + (size_t)64 * w0;
        for (int wi = w0; wi < nw; wi++, dst += 64) {
            if (BITS == 2 && (block_bits(&row, nw, wi >> 3, 2) >> (wi & 7) & 1u)) {
                pn->tmp[nsal++] = (maq2_panel_sal){row.words[wi], (uint32_t)wi, (uint32_t)r};
                dst[0] = dst[16] = dst[32] = dst[48] = 0;
                continue;
            }
            unsigned long long c = _pdep_u64(row.words[wi], 0x3333333333333333ull);
            if (BITS == 4) c |= _pdep_u64(row.hi32[wi], 0xccccccccccccccccull);
            if (BITS == 3) c |= _pdep_u64(row.hi16[wi], 0x4444444444444444ull);
            const unsigned long long b0 = _pdep_u64(c & 0xffffffffu, 0x0f0f0f0f0f0f0f0full);
            const unsigned long long b1 = _pdep_u64(c >> 32, 0x0f0f0f0f0f0f0f0full);
            dst[0] = (uint32_t)b0;
            dst[16] = (uint32_t)(b0 >> 32);
            dst[32] = (uint32_t)b1;
            dst[48] = (uint32_t)(b1 >> 32);
        }
        for (int g = 0; g < ng; g++) {
            pn->sc[16 * g + r] = row.sc[g];
            pn->m[16 * g + r] = row.m[g];
        }
        pn->d[r] = row.d;
        pn->dmin[r] = row.dmin;
        pn->dsal[r] = row.dsal;
    }
    /* the salient words by block (a counting sort keeps row-then-word order inside a block) */
    for (int b = 0; b <= nb; b++) pn->sal_start[b] = 0;
    for (int i = 0; i < nsal; i++) pn->sal_start[(pn->tmp[i].wi >> 3) + 1]++;
    for (int b = 0; b < nb; b++) pn->sal_start[b + 1] += pn->sal_start[b];
    for (int i = 0; i < nsal; i++) pn->sal[pn->sal_start[pn->tmp[i].wi >> 3]++] = pn->tmp[i];
    for (int b = nb; b > 0; b--) pn->sal_start[b] = pn->sal_start[b - 1];
    pn->sal_start[0] = 0;
}

/* Block b's salient words for NT tokens: M[n] -= m[g] * (their input sum), S[n] += sal_dot (per row lane). */
PANEL_FN void panel_salient(const maq2_panel *pn, int b, const int NT, int G, const int16_t *const *s4, __m512i *M,
                            __m512i *S) {
    _Alignas(64) int32_t cM[MAQ2_PANEL_NT][16], cS[MAQ2_PANEL_NT][16];
    memset(cM, 0, sizeof cM);
    memset(cS, 0, sizeof cS);
    for (int i = pn->sal_start[b]; i < pn->sal_start[b + 1]; i++) {
        const maq2_panel_sal e = pn->sal[i];
        const int32_t mg = pn->m[16 * ((16 * e.wi) >> g_shift(G)) + e.r];
        for (int n = 0; n < NT; n++) {
            const int16_t *q = s4[n] + 4 * e.wi;
            cS[n][e.r] += sal_dot(e.word, q);
            cM[n][e.r] += mg * (q[0] + q[1] + q[2] + q[3]);
        }
    }
    for (int n = 0; n < NT; n++) {
        M[n] = _mm512_sub_epi32(M[n], _mm512_load_si512((const void *)cM[n]));
        S[n] = _mm512_load_si512((const void *)cS[n]);
    }
}

/* Y[n * P + pa + r] (r < nr) for the NT tokens whose activation rows start at act (`stride` apart). */
PANEL_FN void panel_tile(const maq2_panel *pn, const maq2_act_layout *L, const uint8_t *act, const int NT, int T,
                         int G, const int BITS, float *Y, size_t P, int pa, int nr) {
    const int gs = g_shift(G);
    const size_t xs_off = G == 32 ? L->xs32 : G == 64 ? L->xs64 : L->xs128;
    const int8_t *xn[MAQ2_PANEL_NT];
    const float *dx[MAQ2_PANEL_NT];
    const int16_t *xs[MAQ2_PANEL_NT], *s4[MAQ2_PANEL_NT];
    for (int n = 0; n < NT; n++) {
        const uint8_t *row = act + (size_t)n * L->stride;
        xn[n] = (const int8_t *)(row + L->xn);
        dx[n] = (const float *)(row + L->dx);
        xs[n] = (const int16_t *)(row + xs_off);
        s4[n] = (const int16_t *)(row + L->s4);
    }
    __m512 fD[MAQ2_PANEL_NT][4], fM[MAQ2_PANEL_NT][4], fS[MAQ2_PANEL_NT][4];   /* lane b % 4, one row per element */
    for (int n = 0; n < NT; n++)
        for (int l = 0; l < 4; l++) fD[n][l] = fM[n][l] = fS[n][l] = _mm512_setzero_ps();
    for (int b = 0; b < L->nb; b++) {
        __m512i D[MAQ2_PANEL_NT], M[MAQ2_PANEL_NT];
        for (int n = 0; n < NT; n++) D[n] = M[n] = _mm512_setzero_si512();
        const int i1 = 128 * b + 128 < T ? 128 * b + 128 : T;
        for (int g = (128 * b) >> gs; (g << gs) < i1; g++) {
            const int k1 = (((g + 1) << gs) < T ? (g + 1) << gs : T) >> 2;
            __m512i C[MAQ2_PANEL_NT];
            for (int n = 0; n < NT; n++) C[n] = _mm512_setzero_si512();
            for (int k = (g << gs) >> 2; k < k1; k++) {
                const __m512i a = _mm512_load_si512((const void *)(pn->codes + (size_t)64 * k));
                for (int n = 0; n < NT; n++) {
                    int32_t x4;
                    memcpy(&x4, xn[n] + 4 * k, 4);
                    C[n] = _mm512_dpbusd_epi32(C[n], a, _mm512_set1_epi32(x4));
                }
            }
            const __m512i sc = _mm512_load_si512((const void *)(pn->sc + 16 * g));
            const __m512i m = _mm512_load_si512((const void *)(pn->m + 16 * g));
            for (int n = 0; n < NT; n++) {
                D[n] = _mm512_add_epi32(D[n], _mm512_mullo_epi32(C[n], sc));
                M[n] = _mm512_add_epi32(M[n], _mm512_mullo_epi32(m, _mm512_set1_epi32(xs[n][g])));
            }
        }
        __m512i S[MAQ2_PANEL_NT];
        for (int n = 0; n < NT; n++) S[n] = _mm512_setzero_si512();
        if (BITS == 2 && pn->sal_start[b + 1] > pn->sal_start[b])
            panel_salient(pn, b, NT, G, s4, M, S);
        const int l = b & 3;
        for (int n = 0; n < NT; n++) {
            const __m512 d = _mm512_set1_ps(dx[n][b]);
            fD[n][l] = _mm512_add_ps(fD[n][l], _mm512_mul_ps(d, _mm512_cvtepi32_ps(D[n])));
            fM[n][l] = _mm512_add_ps(fM[n][l], _mm512_mul_ps(d, _mm512_cvtepi32_ps(M[n])));
            if (BITS == 2) fS[n][l] = _mm512_add_ps(fS[n][l], _mm512_mul_ps(d, _mm512_cvtepi32_ps(S[n])));
        }
    }
    const __m512 vd = _mm512_loadu_ps(pn->d), vdmin = _mm512_loadu_ps(pn->dmin), vdsal = _mm512_loadu_ps(pn->dsal);
    const __mmask16 keep = (__mmask16)((1u << nr) - 1u);
    for (int n = 0; n < NT; n++) {
        const __m512 Dv = _mm512_add_ps(_mm512_add_ps(fD[n][0], fD[n][1]), _mm512_add_ps(fD[n][2], fD[n][3]));
        const __m512 Mv = _mm512_add_ps(_mm512_add_ps(fM[n][0], fM[n][1]), _mm512_add_ps(fM[n][2], fM[n][3]));
        __m512 y = _mm512_add_ps(_mm512_mul_ps(vd, Dv), _mm512_mul_ps(vdmin, Mv));
        if (BITS == 2) {
            const __m512 Sv = _mm512_add_ps(_mm512_add_ps(fS[n][0], fS[n][1]), _mm512_add_ps(fS[n][2], fS[n][3]));
            y = _mm512_add_ps(y, _mm512_mul_ps(vdsal, Sv));
        }
        _mm512_mask_storeu_ps(Y + (size_t)n * P + pa, keep, y);
    }
}

/* Every token tile of B tokens over one panel (tiles of MAQ2_PANEL_NT, the last one nt < MAQ2_PANEL_NT), with the
 * tile size a compile-time constant in each branch. */
PANEL_FN void panel_tokens(const maq2_panel *pn, const maq_weight *w, const maq2_act_layout *L, const uint8_t *act,
                           int B, const int BITS, float *Y, int pa, int nr) {
    const size_t P = (size_t)w->P;
    for (int t0 = 0; t0 < B; t0 += MAQ2_PANEL_NT) {
        const int nt = B - t0 < MAQ2_PANEL_NT ? B - t0 : MAQ2_PANEL_NT;
        const uint8_t *a = act + (size_t)t0 * L->stride;
        float *y = Y + (size_t)t0 * P;
        switch (nt) {
#define PANEL_CASE(N) \
    case N: panel_tile(pn, L, a, N, w->T, w->G, BITS, y, P, pa, nr); break;
            PANEL_CASE(1) PANEL_CASE(2) PANEL_CASE(3) PANEL_CASE(4) PANEL_CASE(5) PANEL_CASE(6) PANEL_CASE(7)
            default: panel_tile(pn, L, a, MAQ2_PANEL_NT, w->T, w->G, BITS, y, P, pa, nr); break;
#undef PANEL_CASE
        }
    }
}
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void panel_tokens_b2(
    const maq2_panel *pn, const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, float *Y, int pa,
    int nr) {
    panel_tokens(pn, w, L, act, B, 2, Y, pa, nr);
}
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void panel_tokens_b34(
    const maq2_panel *pn, const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, float *Y, int pa,
    int nr) {
    panel_tokens(pn, w, L, act, B, 3, Y, pa, nr);   /* MAQ3 and MAQ4: the same float steps (no S) */
}
#endif /* MAQ_X86 */

/* ================================================================== NEON (128-bit) and dotprod, aarch64 */
#if defined(MAQ_NEON)
#define NEON_FN static inline __attribute__((always_inline))

/* As chunk_decode_sse (byte shifts do not cross bytes here; bit selects merge the planes). */
NEON_FN void chunk_decode_neon(const maq2_row *r, int wi, unsigned nib, int8x16_t *V, const int BITS) {
    uint8x16_t W = vld1q_u8((const uint8_t *)(r->words + wi));
    if (BITS != 2) {
        const uint8x16_t m33 = vdupq_n_u8(0x33), m0f = vdupq_n_u8(0x0f);
        uint8x16_t A, Bv;   /* codes k = 0 | 2 and k = 1 | 3 (low | high nibble) */
        if (BITS == 4) {
            const uint8x16_t H = vld1q_u8((const uint8_t *)(r->hi32 + wi));
            A = vbslq_u8(m33, W, vshlq_n_u8(H, 2));
            Bv = vbslq_u8(m33, vshrq_n_u8(W, 2), H);
        } else {
            const uint8x8_t h8 = vld1_u8((const uint8_t *)(r->hi16 + wi)), s8 = vshr_n_u8(h8, 4);
            const uint8x16_t hn = vandq_u8(vcombine_u8(vzip1_u8(h8, s8), vzip2_u8(h8, s8)), m0f);   /* nibbles */
            A = vbslq_u8(m33, W, vqtbl1q_u8(vld1q_u8(HI3_A), hn));
            Bv = vbslq_u8(m33, vshrq_n_u8(W, 2), vqtbl1q_u8(vld1q_u8(HI3_B), hn));
        }
        V[0] = vreinterpretq_s8_u8(vandq_u8(A, m0f));
        V[1] = vreinterpretq_s8_u8(vandq_u8(Bv, m0f));
        V[2] = vreinterpretq_s8_u8(vshrq_n_u8(A, 4));
        V[3] = vreinterpretq_s8_u8(vshrq_n_u8(Bv, 4));
        return;
    }
    const uint8x16_t m3 = vdupq_n_u8(3);
    W = vbicq_u8(W, vld1q_u8((const uint8_t *)SAL_MASK[nib]));
    V[0] = vreinterpretq_s8_u8(vandq_u8(W, m3));
    V[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W, 2), m3));
    V[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W, 4), m3));
    V[3] = vreinterpretq_s8_u8(vshrq_n_u8(W, 6));
}

/* Same products as chunk_dot_sse: int16 sums per byte pair -> times lane scales -> int32 (lane order
 * differs from SSE; only the lane total is used). */
NEON_FN int32x4_t chunk_dot_neon(const int8x16_t *V, const int8_t *xk, int16x8_t sv) {
    const int8x16_t x0 = vld1q_s8(xk), x1 = vld1q_s8(xk + 32), x2 = vld1q_s8(xk + 64), x3 = vld1q_s8(xk + 96);
    int16x8_t lo = vmull_s8(vget_low_s8(V[0]), vget_low_s8(x0));
    lo = vmlal_s8(lo, vget_low_s8(V[1]), vget_low_s8(x1));
    lo = vmlal_s8(lo, vget_low_s8(V[2]), vget_low_s8(x2));
    lo = vmlal_s8(lo, vget_low_s8(V[3]), vget_low_s8(x3));
    int16x8_t hi = vmull_high_s8(V[0], x0);
    hi = vmlal_high_s8(hi, V[1], x1);
    hi = vmlal_high_s8(hi, V[2], x2);
    hi = vmlal_high_s8(hi, V[3], x3);
    const int16x8_t p = vpaddq_s16(lo, hi);          /* lanes 2i, 2i+1 = word i, as in SSE */
    return vmlal_high_s16(vmull_s16(vget_low_s16(p), vget_low_s16(sv)), p, sv);
}

/* The same sums with SDOT (dotprod path): lane i = sc_i * dot(word i), as int32. sv lanes hold (sc, 0) pairs. */
static inline MAQ_DOTPROD_ATTR int32x4_t chunk_dot_dp(const int8x16_t *V, const int8_t *xk, int16x8_t sv) {
    int32x4_t acc = vdotq_s32(vdupq_n_s32(0), V[0], vld1q_s8(xk));
    acc = vdotq_s32(acc, V[1], vld1q_s8(xk + 32));
    acc = vdotq_s32(acc, V[2], vld1q_s8(xk + 64));
    acc = vdotq_s32(acc, V[3], vld1q_s8(xk + 96));
    return vmulq_s32(acc, vandq_s32(vreinterpretq_s32_s16(sv), vdupq_n_s32(0xffff)));
}
#define CHUNK_DOT(DOT, V, xk, sv) ((DOT) ? chunk_dot_dp((V), (xk), (sv)) : chunk_dot_neon((V), (xk), (sv)))

NEON_FN int16x8_t scale_lanes_neon(uint8x16_t sc, const uint8_t *pattern) {
    return vreinterpretq_s16_u8(vqtbl1q_u8(sc, vld1q_u8(pattern)));
}

NEON_FN int32x4_t quad_min_neon(int G, const int8_t *mp, const int16_t *xs, int q) {
    if (G == 128) {
        int8_t m4[8] = {mp[0], mp[1], mp[2], mp[3], 0, 0, 0, 0};
        return vmulq_s32(vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(m4)))), vmovl_s16(vld1_s16(xs + 4 * q)));
    }
    if (G == 64) {
        const int16x8_t m = vmovl_s8(vld1_s8(mp)), xv = vld1q_s16(xs + 8 * q);
        return vpaddq_s32(vmull_s16(vget_low_s16(m), vget_low_s16(xv)), vmull_high_s16(m, xv));
    }
    const int8x16_t m16 = vld1q_s8(mp);
    const int16x8_t ma = vmovl_s8(vget_low_s8(m16)), mb = vmovl_high_s8(m16);
    const int16x8_t xa = vld1q_s16(xs + 16 * q), xb = vld1q_s16(xs + 16 * q + 8);
    return vpaddq_s32(vpaddq_s32(vmull_s16(vget_low_s16(ma), vget_low_s16(xa)), vmull_high_s16(ma, xa)),
                      vpaddq_s32(vmull_s16(vget_low_s16(mb), vget_low_s16(xb)), vmull_high_s16(mb, xb)));
}

NEON_FN void quad_float_neon(int32x4_t Dv, int32x4_t Mv, int32x4_t Sv, const float *dx4, float32x4_t *f,
                             const int BITS) {
    const float32x4_t dxv = vld1q_f32(dx4);
    f[0] = vaddq_f32(f[0], vmulq_f32(dxv, vcvtq_f32_s32(Dv)));
    f[1] = vaddq_f32(f[1], vmulq_f32(dxv, vcvtq_f32_s32(Mv)));
    if (BITS == 2) f[2] = vaddq_f32(f[2], vmulq_f32(dxv, vcvtq_f32_s32(Sv)));
}

/* As salient_quad_sse: block j's salient sums in lane j of Sv[t] / Cv[t], kept in registers. */
NEON_FN void salient_quad_neon(const maq2_row *r, const maq2_x *x, const int NT, int q, uint32_t bits, int G,
                               int32x4_t *Sv, int32x4_t *Cv) {
    const int gsh = g_shift(G);
    while (bits) {
        const int i = __builtin_ctz(bits), w = 32 * q + i, j = i >> 3;
        bits &= bits - 1;
        const uint32_t word = r->words[w];
        const int32_t mg = r->m[(16 * w) >> gsh];
        const int32x4_t lane = vld1q_s32((const int32_t *)SAL_MASK[1u << j]);
        for (int t = 0; t < NT; t++) {
            const int16_t *s4 = x[t].s4 + 4 * w;
            Sv[t] = vaddq_s32(Sv[t], vandq_s32(vdupq_n_s32(sal_dot(word, s4)), lane));
            Cv[t] = vaddq_s32(Cv[t], vandq_s32(vdupq_n_s32(mg * (s4[0] + s4[1] + s4[2] + s4[3])), lane));
        }
    }
}

NEON_FN void remainder_neon(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, int b0, maq2_acc *a,
                            const int DOT, const int BITS) {
    const int nw = T / 16, nb = (T + 127) / 128, ng = (T + G - 1) / G, gi = g_index(G);
    for (int b = b0; b < nb; b++) {
        const int nwb = block_words(nw, b), nc = nwb >> 2;
        const unsigned bits = block_bits(r, nw, b, BITS);
        const uint8x16_t sc4 = vreinterpretq_u8_u32(vsetq_lane_u32(block_sc4(r, b, G, ng), vdupq_n_u32(0), 0));
        int32x4_t acc[MAQ2_NT];
        for (int t = 0; t < NT; t++) acc[t] = vdupq_n_s32(0);
        for (int c = 0; c < nc; c++) {
            int8x16_t V[4];
            const int16x8_t sv = scale_lanes_neon(sc4, SC_SHUF[gi][0][c]);
            chunk_decode_neon(r, 8 * b + 4 * c, (bits >> (4 * c)) & 15u, V, BITS);
            for (int t = 0; t < NT; t++) acc[t] = vaddq_s32(acc[t], CHUNK_DOT(DOT, V, x[t].xp + 128 * b + 16 * c, sv));
        }
        for (int t = 0; t < NT; t++) block_rest(r, &x[t], b, nwb, bits, G, ng, vaddvq_s32(acc[t]), &a[t], BITS);
    }
}

/* DOT (compile time): 0 = NEON widening multiplies, 1 = SDOT (only inside MAQ_DOTPROD_ATTR functions). */
NEON_FN void row_neon_any(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int DOT,
                          const int BITS) {
    const int nq = T / 512, gi = g_index(G);
    float32x4_t f[MAQ2_NT][3];
    for (int t = 0; t < NT; t++) f[t][0] = f[t][1] = f[t][2] = vdupq_n_f32(0.0f);
    for (int q = 0; q < nq; q++) {
        uint32_t qbits = 0;
        if (BITS == 2) memcpy(&qbits, r->bm + 4 * q, 4);
        const uint8_t *scp = r->sc + (size_t)q * (512 >> g_shift(G));
        uint8_t scb[16] = {0};
        memcpy(scb, scp, (size_t)(512 >> g_shift(G)));
        const uint8x16_t scq = vld1q_u8(scb);
        int32x4_t h[2][MAQ2_NT], prev[MAQ2_NT];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            int32x4_t acc[MAQ2_NT];
#pragma GCC unroll 2
            for (int c = 0; c < 2; c++) {
                int8x16_t V[4];
                const int16x8_t sv = scale_lanes_neon(scq, SC_SHUF[gi][j][c]);
                chunk_decode_neon(r, 32 * q + 8 * j + 4 * c, (qbits >> (8 * j + 4 * c)) & 15u, V, BITS);
                for (int t = 0; t < NT; t++) {
                    const int32x4_t d = CHUNK_DOT(DOT, V, x[t].xp + 512 * q + 128 * j + 16 * c, sv);
                    acc[t] = c ? vaddq_s32(acc[t], d) : d;
                }
            }
            for (int t = 0; t < NT; t++) {
                if (j & 1) h[j >> 1][t] = vpaddq_s32(prev[t], acc[t]);
                else prev[t] = acc[t];
            }
        }
        int32x4_t Sv[MAQ2_NT], Cv[MAQ2_NT];
        for (int t = 0; t < NT; t++) Sv[t] = Cv[t] = vdupq_n_s32(0);
        if (qbits) salient_quad_neon(r, x, NT, q, qbits, G, Sv, Cv);
        const int8_t *mp = r->m + (size_t)q * (512 >> g_shift(G));
        for (int t = 0; t < NT; t++)
            quad_float_neon(vpaddq_s32(h[0][t], h[1][t]), vsubq_s32(quad_min_neon(G, mp, x[t].xsg, q), Cv[t]), Sv[t],
                            x[t].dx + 4 * q, f[t], BITS);
    }
    maq2_acc a[MAQ2_NT];
    for (int t = 0; t < NT; t++) {
        vst1q_f32(a[t].D, f[t][0]);
        vst1q_f32(a[t].M, f[t][1]);
        vst1q_f32(a[t].S, f[t][2]);
    }
    remainder_neon(r, x, NT, T, G, 4 * nq, a, DOT, BITS);
    for (int t = 0; t < NT; t++) out[t] = acc_final(&a[t], r, BITS);
}

NEON_FN void row_neon_nt(const maq2_row *r, const maq2_x *x, const int NT, int T, int G, float *out, const int BITS) {
    row_neon_any(r, x, NT, T, G, out, 0, BITS);
}
static inline __attribute__((always_inline)) MAQ_DOTPROD_ATTR void row_dot_nt(const maq2_row *r, const maq2_x *x,
                                                                            const int NT, int T, int G, float *out,
                                                                            const int BITS) {
    row_neon_any(r, x, NT, T, G, out, 1, BITS);
}
static __attribute__((noinline)) void rows_neon_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 2, row_neon_nt);
}
static __attribute__((noinline)) void rows_neon_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 3, row_neon_nt);
}
static __attribute__((noinline)) void rows_neon_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 4, row_neon_nt);
}
static __attribute__((noinline)) MAQ_DOTPROD_ATTR void rows_dot_b2(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 2, row_dot_nt);
}
static __attribute__((noinline)) MAQ_DOTPROD_ATTR void rows_dot_b3(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 3, row_dot_nt);
}
static __attribute__((noinline)) MAQ_DOTPROD_ATTR void rows_dot_b4(
    const maq_weight *w, const maq2_x *x, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, x, nt, pa, pb, Y, pf, MAQ2_NT, 4, row_dot_nt);
}
#endif /* MAQ_NEON */

/* ================================================================== AMX (x86-64, batched MAQ products) */
/* Tiles of 16 rows x 16 tokens; TDPBUSD multiplies uint8 weights-side bytes (A) by the int8 activation (B, laid out by
 * maq_act_prepare: maq_internal.h) into exact int32 sums. A 16-row panel is unpacked once into up to four A streams
 * and reused for every token tile:
 *   code  the code of each input (0 in a MAQ2 salient word)                -> per group: D_b += sc[g] * sum
 *   min   m[g] + 128 on inputs of non-salient words (0 in salient words)    -> CM = M_b + 128 * (sum of their x)
 *   mean  c_k + 128 on the inputs 4k..4k+3 of a MAQ2 salient word (else 0) -> CS = S_b + 128 * CX
 *   one   1 on the inputs of a MAQ2 salient word (else 0)                   -> CX
 * so M_b = CM - 128 * XS_b + 128 * CX (XS_b: the block's input sum) and S_b = CS - 128 * CX: the integers of the
 * scalar reference (maq2.c's header), then the same float operations in the same order as acc_block and acc_final
 * (mul then add, lanes b % 4), 16 tokens per vector: bit-identical to it. The code stream gives one group per
 * product (G = 32: two 32-input tiles per 64-input chunk; G = 64: one chunk; G = 128: both chunks of a block
 * accumulate in the tile); the other streams accumulate a whole block in their tiles. MAQ2 with int8 salient words
 * (maq_s8.c) runs the VNNI code. */
#if defined(MAQ_X86) && defined(__linux__)
#define AMX_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")))

typedef struct {             /* the LDTILECFG operand (palette 1) */
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

enum { AMX_CODE = 0, AMX_MIN = 1, AMX_MEAN = 2, AMX_ONE = 3 };   /* A streams: panel + stream * nch * 1024 */

/* lut2[v] = the four 2-bit fields of byte v as four bytes (field k in byte k), little-endian uint32. */
static void amx_lut2(uint32_t lut2[256]) {
    for (uint32_t v = 0; v < 256; v++) lut2[v] = (v & 3u) | (v >> 2 & 3u) << 8 | (v >> 4 & 3u) << 16 | (v >> 6) << 24;
}

/* The A streams of the panel's nr rows (rows[r]; rows >= nr: zero): stream s, chunk c: panel[(s * nch + c) * 1024 +
 * 64 r + j] for input 64c + j of row r (inputs >= T: zero). Codes four at a time: lo fields by lut2, plus 4x the hi
 * fields (MAQ4: lut2 of the hi byte; MAQ3: the hi nibble's bits spread to 2-bit fields first). */
static void amx_unpack_panel(const maq_weight *w, const maq2_row *rows, int nr, const int BITS,
                             const uint32_t lut2[256], uint8_t *panel) {
    const int nw = w->T >> 4, nch = (w->T + 63) >> 6, gs = g_shift(w->G);
    const size_t stream = (size_t)nch * 1024;
    memset(panel, 0, (BITS == 2 ? 4 : 2) * stream);
    static const uint8_t spread4[16] = {0x00, 0x01, 0x04, 0x05, 0x10, 0x11, 0x14, 0x15,
                                        0x40, 0x41, 0x44, 0x45, 0x50, 0x51, 0x54, 0x55};   /* bit k -> bit 2k */
    for (int r = 0; r < nr; r++) {
        const maq2_row *row = &rows[r];
        for (int wi = 0; wi < nw; wi++) {
            uint8_t *dst = panel + (size_t)(wi >> 2) * 1024 + 64 * r + 16 * (wi & 3);
            const uint32_t lo = row->words[wi];
            if (BITS == 2 && (row->bm[wi >> 3] >> (wi & 7) & 1u)) {   /* salient: 4 int8 means */
                for (int j = 0; j < 16; j++) {
                    dst[AMX_MEAN * stream + j] = (uint8_t)((lo >> (8 * (j >> 2))) & 0xffu) ^ 0x80u;   /* c + 128 */
                    dst[AMX_ONE * stream + j] = 1;
                }
                continue;
            }
            uint32_t q[4];
            for (int k = 0; k < 4; k++) {
                q[k] = lut2[lo >> (8 * k) & 0xffu];
                if (BITS == 4) q[k] |= lut2[row->hi32[wi] >> (8 * k) & 0xffu] << 2;
                if (BITS == 3) q[k] |= lut2[spread4[row->hi16[wi] >> (4 * k) & 0xfu]] << 2;
            }
            memcpy(dst, q, 16);
            memset(dst + AMX_MIN * stream, (uint8_t)(row->m[(16 * wi) >> gs] + 128), 16);
        }
    }
}

/* D[r] += C[r] * sc_r[g] for the 16 rows of one int32 result tile. */
static inline __attribute__((always_inline)) AMX_FN void amx_scale_add(__m512i D[16], const int32_t C[16][16],
                                                                        const uint8_t *const sc[16], int g) {
    for (int r = 0; r < 16; r++)
        D[r] = _mm512_add_epi32(D[r], _mm512_mullo_epi32(_mm512_load_si512(C[r]), _mm512_set1_epi32(sc[r][g])));
}

/* One 16-row x kb-input product of every stream: tmm4 = A (code stream at A, the others stream bytes later),
 * tmm5 = B; code into tmm0, min / mean / one accumulate into tmm1 / tmm2 / tmm3. */
#define AMX_STREAMS(A, X, stream, BITS)                                      \
    do {                                                                     \
        _tile_loadd(5, (X), 64);                                             \
        _tile_loadd(4, (A), 64);                                             \
        _tile_dpbusd(0, 4, 5);                                               \
        _tile_loadd(4, (A) + AMX_MIN * (stream), 64);                        \
        _tile_dpbusd(1, 4, 5);                                               \
        if ((BITS) == 2) {                                                   \
            _tile_loadd(4, (A) + AMX_MEAN * (stream), 64);                   \
            _tile_dpbusd(2, 4, 5);                                           \
            _tile_loadd(4, (A) + AMX_ONE * (stream), 64);                    \
            _tile_dpbusd(3, 4, 5);                                           \
        }                                                                    \
    } while (0)

/* Token tile t0..t0+nt-1 (its operands at `tile`, maq_internal.h) of the 16-row panel at pa (valid rows nr) from
 * the panel's unpacked streams. */
static AMX_FN void amx_tile(const maq_weight *w, const maq2_act_layout *L, const uint8_t *tile, const uint8_t *panel,
                            const maq2_row *rows, int nr, int nt, float *Y, int pa, int t0, const int BITS) {
    const int G = w->G, ng = (w->T + G - 1) >> g_shift(G), nch = (w->T + 63) >> 6;
    const size_t stream = (size_t)nch * 1024;
    const float *dxs = (const float *)(tile + stream);         /* [nb][16] */
    const int32_t *xss = (const int32_t *)(dxs + L->nb * 16);  /* [nb][16] 128 * XS_b */
    __m512 fD[16][4], fM[16][4], fS[16][4];
    for (int r = 0; r < 16; r++)
        for (int l = 0; l < 4; l++) fD[r][l] = fM[r][l] = fS[r][l] = _mm512_setzero_ps();
    const uint8_t *sc[16];   /* rows beyond the panel's last (codes 0, outputs not stored) read row 0's scales */
    for (int r = 0; r < 16; r++) sc[r] = rows[r < nr ? r : 0].sc;
    _Alignas(64) int32_t C0[16][16], CM[16][16], CS[16][16], CX[16][16];
    const __m512i k128 = _mm512_set1_epi32(128);
    for (int b = 0; b < L->nb; b++) {
        __m512i D[16];
        for (int r = 0; r < 16; r++) D[r] = _mm512_setzero_si512();
        _tile_zero(1);
        if (BITS == 2) {
            _tile_zero(2);
            _tile_zero(3);
        }
        const int c_end = 2 * b + 2 < nch ? 2 * b + 2 : nch;
        if (G == 128) _tile_zero(0);
        for (int c = 2 * b; c < c_end; c++) {
            const uint8_t *A = panel + (size_t)c * 1024;
            const uint8_t *X = tile + (size_t)c * 1024;
            if (G == 32) {                        /* two groups per chunk: two 32-input products */
                for (int h = 0; h < 2; h++) {
                    _tile_zero(0);
                    AMX_STREAMS(A + 32 * h, X + 512 * h, stream, BITS);
                    _tile_stored(0, C0, 64);
                    if (2 * c + h < ng) amx_scale_add(D, (const int32_t(*)[16])C0, sc, 2 * c + h);
                }
            } else if (G == 64) {
                _tile_zero(0);
                AMX_STREAMS(A, X, stream, BITS);
                _tile_stored(0, C0, 64);
                amx_scale_add(D, (const int32_t(*)[16])C0, sc, c);
            } else {
                AMX_STREAMS(A, X, stream, BITS);
            }
        }
        if (G == 128) {
            _tile_stored(0, C0, 64);
            amx_scale_add(D, (const int32_t(*)[16])C0, sc, b);
        }
        _tile_stored(1, CM, 64);
        if (BITS == 2) {
            _tile_stored(2, CS, 64);
            _tile_stored(3, CX, 64);
        }
        const __m512 dx = _mm512_load_ps(dxs + 16 * b);
        const __m512i xs = _mm512_load_si512(xss + 16 * b);   /* 128 * XS_b */
        const int l = b & 3;
        for (int r = 0; r < 16; r++) {
            __m512i M = _mm512_sub_epi32(_mm512_load_si512(CM[r]), xs);
            fD[r][l] = _mm512_add_ps(fD[r][l], _mm512_mul_ps(dx, _mm512_cvtepi32_ps(D[r])));
            if (BITS == 2) {
                const __m512i x128 = _mm512_mullo_epi32(_mm512_load_si512(CX[r]), k128);
                M = _mm512_add_epi32(M, x128);
                const __m512i S = _mm512_sub_epi32(_mm512_load_si512(CS[r]), x128);
                fS[r][l] = _mm512_add_ps(fS[r][l], _mm512_mul_ps(dx, _mm512_cvtepi32_ps(S)));
            }
            fM[r][l] = _mm512_add_ps(fM[r][l], _mm512_mul_ps(dx, _mm512_cvtepi32_ps(M)));
        }
    }
    for (int r = 0; r < nr; r++) {
        const __m512 Dv = _mm512_add_ps(_mm512_add_ps(fD[r][0], fD[r][1]), _mm512_add_ps(fD[r][2], fD[r][3]));
        const __m512 Mv = _mm512_add_ps(_mm512_add_ps(fM[r][0], fM[r][1]), _mm512_add_ps(fM[r][2], fM[r][3]));
        __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(rows[r].d), Dv),
                                 _mm512_mul_ps(_mm512_set1_ps(rows[r].dmin), Mv));
        if (BITS == 2) {
            const __m512 Sv = _mm512_add_ps(_mm512_add_ps(fS[r][0], fS[r][1]), _mm512_add_ps(fS[r][2], fS[r][3]));
            y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(rows[r].dsal), Sv));
        }
        _Alignas(64) float out[16];
        _mm512_store_ps(out, y);
        for (int n = 0; n < nt; n++) Y[(size_t)(t0 + n) * w->P + pa + r] = out[n];
    }
}

/* The activation's operand tiles were laid out for these B rows (maq_internal.h: the trailer). */
static int amx_tiles_ready(const maq2_act_layout *L, const uint8_t *act, int B) {
    uint32_t mark = 0;
    if (maq2_act_tiles_bytes(L->T, B)) memcpy(&mark, maq2_act_tiles_mark(act, L->stride, L->T, B), 4);
    return mark == (MAQ_AMX_TILES_MARK ^ (uint32_t)B);
}

/* MAQ rows [p0, p1) for B >= MAQ_AMX_MIN_B tokens. Returns 0 if its scratch could not be allocated (the caller
 * then runs the VNNI code). */
static AMX_FN int amx_rows(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                           float *Y, const int BITS) {
    const int G = w->G, nch = (w->T + 63) >> 6, ntt = (B + 15) / 16;
    uint8_t *panel = aligned_alloc(64, (size_t)(BITS == 2 ? 4 : 2) * nch * 1024);   /* the A streams */
    if (!panel) return 0;
    uint32_t lut2[256];
    amx_lut2(lut2);
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    const int kb = G == 32 ? 32 : 64;    /* inputs per product */
    for (int i = 0; i < 4; i++) cfg.rows[i] = 16, cfg.colsb[i] = 64;   /* tmm0-3: int32 [16 rows][16 tokens] */
    cfg.rows[4] = 16, cfg.colsb[4] = (uint16_t)kb;                      /* tmm4: A uint8 [16 rows][kb] */
    cfg.rows[5] = (uint8_t)(kb / 4), cfg.colsb[5] = 64;                 /* tmm5: B [kb/4][16 tokens x 4] */
    _tile_loadconfig(&cfg);
    const uint8_t *tiles = act + (size_t)B * L->stride;
    const size_t ts = maq2_act_tile_stride(w->T);
    for (int pa = p0; pa < p1; pa += 16) {
        const int nr = p1 - pa < 16 ? p1 - pa : 16;
        maq2_row rows[16];
        for (int r = 0; r < nr; r++) row_init_g(w, pa + r, G, BITS, &rows[r]);
        amx_unpack_panel(w, rows, nr, BITS, lut2, panel);
        for (int tt = 0; tt < ntt; tt++) {
            const int nt = B - 16 * tt < 16 ? B - 16 * tt : 16;
            const uint8_t *tile = tiles + (size_t)tt * ts;
            if (BITS == 2) amx_tile(w, L, tile, panel, rows, nr, nt, Y, pa, 16 * tt, 2);
            else amx_tile(w, L, tile, panel, rows, nr, nt, Y, pa, 16 * tt, 3);
        }
    }
    _tile_release();
    free(panel);
    return 1;
}
#endif /* MAQ_X86 && __linux__ */

/* ================================================================== row/token tiling (maq_rows_tiled) */
typedef struct {
    const maq_weight *w;
    const maq2_act_layout *L;
    const uint8_t *act;
    float *Y;
    rows_fn rows;           /* tiles of 1..ntmax tokens */
    rows_fn rows1;          /* single tokens */
    int pf;                 /* rows ahead to prefetch */
} maq2_tiles;

static void maq2_tile(void *ctx, int t0, int nt, int pa, int pb) {
    const maq2_tiles *c = (const maq2_tiles *)ctx;
    maq2_x x[MAQ2_NT_MAX];
    for (int t = 0; t < nt; t++) x_init(c->L, c->act + (size_t)(t0 + t) * c->L->stride, c->w->G, &x[t]);
    (nt == 1 ? c->rows1 : c->rows)(c->w, x, nt, pa, pb, c->Y + (size_t)t0 * c->w->P, c->pf);
}

static void rows_tiled(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                       float *Y, rows_fn rows, rows_fn rows1, int ntmax) {
    /* prefetch only when each row is visited once (B <= ntmax): revisited 16-row tiles are already in cache */
    const size_t rb = (size_t)(w->T >> 4) * (w->type == MAQ_TYPE_MAQ4 ? 8 : w->type == MAQ_TYPE_MAQ3 ? 6 : 4);
    maq2_tiles c = {w, L, act, Y, rows, rows1, B <= ntmax ? maq_pf_rows(rb, MAQ_PF_BYTES_MAQ) : 0};
    maq_rows_tiled(B, p0, p1, ntmax, maq2_tile, &c);
}

#if defined(MAQ_X86)
/* MAQ rows [p0, p1) for B tokens (panel_pays) on the VNNI path, a 16-row panel at a time. Returns 0 if its scratch
 * could not be allocated (the caller then runs the row functions). */
static __attribute__((target(MAQ_VNNI_TARGET ",bmi2"))) int panel_rows(const maq_weight *w,
                                                                         const maq2_act_layout *L,
                                                                         const uint8_t *act, int B, int p0, int p1,
                                                                         float *Y) {
    const int T = w->T, ng = (T + w->G - 1) >> g_shift(w->G), nb = (T + 127) >> 7, bits = type_bits(w->type);
    const size_t n_sal = bits == 2 ? (size_t)T : 0;   /* 16 rows x T/16 words */
    const size_t codes = (size_t)16 * T, scales = (size_t)128 * ng, sal = n_sal * sizeof(maq2_panel_sal);
    uint8_t *buf = aligned_alloc(64, (codes + scales + 2 * sal + (size_t)4 * (nb + 1) + 63) / 64 * 64);
    if (!buf) return 0;
    maq2_panel pn;
    pn.codes = buf;
    pn.sc = (int32_t *)(buf + codes);
    pn.m = pn.sc + (size_t)16 * ng;
    pn.sal = (maq2_panel_sal *)(buf + codes + scales);
    pn.tmp = pn.sal + n_sal;
    pn.sal_start = (int *)(buf + codes + scales + 2 * sal);
    for (int pa = p0; pa < p1; pa += 16) {
        const int nr = p1 - pa < 16 ? p1 - pa : 16;
        if (bits == 2) {
            panel_unpack(w, pa, nr, 2, &pn);
            panel_tokens_b2(&pn, w, L, act, B, Y, pa, nr);
        } else {
            if (bits == 3) panel_unpack(w, pa, nr, 3, &pn);
            else panel_unpack(w, pa, nr, 4, &pn);
            panel_tokens_b34(&pn, w, L, act, B, Y, pa, nr);
        }
    }
    free(buf);
    return 1;
}
#endif

/* ================================================================== dispatch */
typedef struct {
    rows_fn rows[3];        /* [BITS - 2]: the path's rows, token tiles of 1..ntmax */
    int ntmax;
    /* [BITS - 2]: single tokens where the CPU has GFNI (the 512-bit rows), else NULL (rows). (The VNNI path's 256-bit
     * rows are 3-6 % faster on MAQ3 / MAQ4 1536 x 576 in a kernels.matmul loop, but SmolLM2 decode with them on its
     * 576-wide rows was 3 % slower: 131.3 vs 135.7 tok/s, 5 alternated runs; so every width runs the 512-bit rows.) */
    rows_fn rows1_gfni[3];
} maq2_path;

/* Per SIMD path; a path without an entry runs the scalar reference. */
static const maq2_path MAQ2_PATHS[MAQ_N_PATHS] = {
#if defined(MAQ_X86)
    [MAQ_PATH_SSE] = {{rows_sse_b2, rows_sse_b3, rows_sse_b4}, MAQ2_NT, {NULL}},
    [MAQ_PATH_AVX2] = {{rows_avx2_b2, rows_avx2_b3, rows_avx2_b4}, MAQ2_NT, {NULL}},
    [MAQ_PATH_VNNI] = {{rows_vnni_b2, rows_vnni_b3, rows_vnni_b4}, MAQ2_NT_MAX,
                       {rows_zmm_b2, rows_zmm_b3, rows_zmm_b4}},
    /* AMX: small batches and int8-salient MAQ2 (else amx_rows) */
    [MAQ_PATH_AMX] = {{rows_vnni_b2, rows_vnni_b3, rows_vnni_b4}, MAQ2_NT_MAX,
                      {rows_zmm_b2, rows_zmm_b3, rows_zmm_b4}},
#endif
#if defined(MAQ_NEON)
    [MAQ_PATH_NEON] = {{rows_neon_b2, rows_neon_b3, rows_neon_b4}, MAQ2_NT, {NULL}},
    [MAQ_PATH_DOTPROD] = {{rows_dot_b2, rows_dot_b3, rows_dot_b4}, MAQ2_NT, {NULL}},
#endif
};

/* MAQ2, MAQ3 and MAQ4 (w->type) rows [p0, p1) for all B tokens. */
void maq2_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    maq2_act_layout L;
    maq2_act_layout_init(&L, w->T);
#if defined(MAQ_X86) && defined(__linux__)
    if (path == MAQ_PATH_AMX && !(w->type == MAQ_TYPE_MAQ2 && w->salw) && amx_tiles_ready(&L, act, B) &&
        amx_rows(w, &L, act, B, p0, p1, Y, type_bits(w->type)))
        return;
#endif
    const maq2_path *pp = path > 0 && path < MAQ_N_PATHS ? &MAQ2_PATHS[path] : NULL;
    const int bi = type_bits(w->type) - 2;
#if defined(MAQ_X86)
    if ((path == MAQ_PATH_VNNI || path == MAQ_PATH_AMX) && w->r16 && maq2_r16_rows(w, &L, act, B, p0, p1, Y))
        return;
    if ((path == MAQ_PATH_VNNI || path == MAQ_PATH_AMX) && panel_pays(w->T, B) &&
        panel_rows(w, &L, act, B, p0, p1, Y))
        return;
#endif
    if (pp && pp->rows[bi]) {
        const rows_fn rows1 = pp->rows1_gfni[bi] && maq_cpu_gfni() ? pp->rows1_gfni[bi] : pp->rows[bi];
        rows_tiled(w, &L, act, B, p0, p1, Y, pp->rows[bi], rows1, pp->ntmax);
    } else {
        rows_scalar(w, &L, act, B, p0, p1, Y);
    }
}

/* Row p dequantized exactly as format.dequantize does it (float32: d*sc*q + dmin*m, dsal*c). */
void maq2_get_row(const maq_weight *w, int p, float *out) {
    const int bits = type_bits(w->type), nw = w->T / 16, G = w->G;
    maq2_row r;
    row_init_g(w, p, G, bits, &r);
    for (int wi = 0; wi < nw; wi++) {
        const uint32_t word = r.words[wi];
        const int g = 16 * wi / G;
        if (bits == 2 && (r.bm[wi / 8] >> (wi % 8) & 1u)) {
            for (int j = 0; j < 16; j++) out[16 * wi + j] = r.dsal * (float)(int8_t)(uint8_t)(word >> (8 * (j / 4)));
        } else {
            const float s = r.d * (float)r.sc[g], lo = r.dmin * (float)r.m[g];
            for (int j = 0; j < 16; j++) out[16 * wi + j] = s * (float)code_of(&r, wi, j, bits) + lo;
        }
    }
}
