/* maq2.c -- MAQ2 mixed-width (2-bit / salient 8-bit) products and row dequantization.
 *
 * Weight row p (format.py): words uint32 [T/16], bitmap uint8 [ceil(T/128)], scales uint8 [2*ng]
 * (sc uint8 [ng] then m int8 [ng], ng = ceil(T/G)), rowscale half [3] = d, dmin, dsal.
 * Activation: the MAQ2 layout of maq_internal.h (int8 x per 128-input block b with float scale dx[b]).
 *
 * Per block b (8 words = one bitmap byte), all paths compute the same three exact integers
 *   D_b = sum over 2-bit words w of sc[g(w)] * sum_j q_j(w) * x_j
 *   M_b = sum over 2-bit words w of m[g(w)]  * sum_j x_j          (= sum_g m_g*XS_g - salient corrections)
 *   S_b = sum over salient words w of sum_k c_k(w) * s4_k(w)
 * (|D_b| <= 8*16*3*127*255 < 2^24, so the int -> float conversion is exact), then in this order
 *   fD += dx[b]*D_b; fM += dx[b]*M_b; fS += dx[b]*S_b;   and finally  y = d*fD + dmin*fM + dsal*fS.
 * Hence every path is bit-identical to the scalar reference.
 */
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
    const uint8_t *bm;      /* [ceil(T/128)] */
    const uint8_t *sc;      /* [ng] */
    const int8_t *m;        /* [ng] */
    float d, dmin, dsal;
} maq2_row;

typedef struct {            /* one token's activation row, see maq2_act_layout */
    const int8_t *xp;       /* [nb][128] permuted */
    const int8_t *xn;       /* [T] */
    const float *dx;        /* [nb] */
    const int16_t *s4;      /* [T/4] */
    const int32_t *xsg;     /* [ng] sums of x per 2-bit group (xs32, xs64 or xs128 by G) */
} maq2_x;

static inline void row_init(const maq_weight *w, int p, maq2_row *r) {
    const int nw = w->T / 16, nbm = (nw + 7) / 8, ng = (w->T + w->G - 1) / w->G;
    r->words = (const uint32_t *)w->data + (size_t)p * nw;
    r->bm = w->bitmap + (size_t)p * nbm;
    r->sc = w->scales + (size_t)p * 2 * ng;
    r->m = (const int8_t *)(r->sc + ng);
    r->d = maq_h2f(w->rowscale[3 * (size_t)p + 0]);
    r->dmin = maq_h2f(w->rowscale[3 * (size_t)p + 1]);
    r->dsal = maq_h2f(w->rowscale[3 * (size_t)p + 2]);
}

static inline void x_init(const maq2_act_layout *L, const uint8_t *row, int G, maq2_x *x) {
    x->xp = (const int8_t *)(row + L->xp);
    x->xn = (const int8_t *)(row + L->xn);
    x->dx = (const float *)(row + L->dx);
    x->s4 = (const int16_t *)(row + L->s4);
    x->xsg = (const int32_t *)(row + (G == 32 ? L->xs32 : G == 64 ? L->xs64 : L->xs128));
}

/* Words of block b and the bitmap byte with padding bits cleared. */
static inline int block_words(int nw, int b) { return nw - 8 * b < 8 ? nw - 8 * b : 8; }
static inline unsigned block_bits(const maq2_row *r, int nw, int b) {
    return r->bm[b] & ((1u << block_words(nw, b)) - 1u);
}

/* The float part shared by all paths (exact integers in, fixed operation order). */
typedef struct {
    float fD, fM, fS;
} maq2_acc;
static inline void acc_block(maq2_acc *a, float dx, int32_t D, int32_t M, int32_t S) {
    a->fD += dx * (float)D;
    a->fM += dx * (float)M;
    a->fS += dx * (float)S;
}
static inline float acc_final(const maq2_acc *a, const maq2_row *r) {
    return r->d * a->fD + r->dmin * a->fM + r->dsal * a->fS;
}

/* Salient words of block b: S += sum c_k*s4_k; M correction -= m_g * sum x (their inputs are not 2-bit). */
static inline void salient_block(const maq2_row *r, const maq2_x *x, int b, unsigned bits, int G,
                                 int32_t *S, int32_t *M) {
    while (bits) {
        int i = __builtin_ctz(bits);
        bits &= bits - 1;
        int w = 8 * b + i;
        uint32_t word = r->words[w];
        const int16_t *s4 = x->s4 + 4 * w;
        int32_t s = 0;
        for (int k = 0; k < 4; k++) s += (int32_t)(int8_t)(uint8_t)(word >> (8 * k)) * s4[k];
        *S += s;
        *M -= (int32_t)r->m[16 * w / G] * (s4[0] + s4[1] + s4[2] + s4[3]);
    }
}

/* M_b before salient corrections: sum over the groups of block b of m_g * XS_g. */
static inline int32_t min_block(const maq2_row *r, const maq2_x *x, int b, int G, int ng) {
    const int gpb = 128 / G, g0 = b * gpb;
    const int g1 = g0 + gpb < ng ? g0 + gpb : ng;
    int32_t M = 0;
    for (int g = g0; g < g1; g++) M += (int32_t)r->m[g] * x->xsg[g];
    return M;
}

/* 2-bit dot of one word with natural-order int8 x (16 inputs). */
static inline int32_t word_dot(uint32_t word, const int8_t *x16) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += (int32_t)((word >> (2 * j)) & 3u) * x16[j];
    return s;
}

/* ================================================================== scalar reference */
/* Obviously correct: walks every word, natural-order x; the integers it forms are D_b, M_b, S_b above. */
static float row_dot_scalar(const maq2_row *r, const maq2_x *x, int T, int G) {
    const int nw = T / 16, nb = (T + 127) / 128;
    maq2_acc a = {0.0f, 0.0f, 0.0f};
    for (int b = 0; b < nb; b++) {
        const unsigned bits = block_bits(r, nw, b);
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
                int32_t xs = 0;
                for (int j = 0; j < 16; j++) xs += x16[j];
                D += (int32_t)r->sc[g] * word_dot(word, x16);
                M += (int32_t)r->m[g] * xs;
            }
        }
        acc_block(&a, x->dx[b], D, M, S);
    }
    return acc_final(&a, r);
}

static void rows_scalar(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0,
                        int p1, float *Y) {
    for (int p = p0; p < p1; p++) {
        maq2_row r;
        row_init(w, p, &r);
        for (int t = 0; t < B; t++) {
            maq2_x x;
            x_init(L, act + (size_t)t * L->stride, w->G, &x);
            Y[(size_t)t * w->P + p] = row_dot_scalar(&r, &x, w->T, w->G);
        }
    }
}

/* ================================================================== dispatch */
void maq2_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    maq2_act_layout L;
    maq2_act_layout_init(&L, w->T);
    switch (path) {
    default:
        rows_scalar(w, &L, act, B, p0, p1, Y);
        break;
    }
}

/* Row p dequantized exactly as format.dequantize does it (float32: d*sc*q + dmin*m, dsal*c). */
void maq2_get_row(const maq_weight *w, int p, float *out) {
    maq2_row r;
    row_init(w, p, &r);
    const int nw = w->T / 16, G = w->G;
    for (int wi = 0; wi < nw; wi++) {
        const uint32_t word = r.words[wi];
        const int g = 16 * wi / G;
        if (r.bm[wi / 8] >> (wi % 8) & 1u) {
            for (int j = 0; j < 16; j++) out[16 * wi + j] = r.dsal * (float)(int8_t)(uint8_t)(word >> (8 * (j / 4)));
        } else {
            const float s = r.d * (float)r.sc[g], lo = r.dmin * (float)r.m[g];
            for (int j = 0; j < 16; j++) out[16 * wi + j] = s * (float)((word >> (2 * j)) & 3u) + lo;
        }
    }
}
