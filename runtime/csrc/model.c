/* model.c -- Llama forward (decode and batched prefill) over the maq.h kernels. See model.h.
 *
 * Every matrix product goes through maq_act_prepare (once per shared input: Q/K/V, gate/up) + maq_matmul_act;
 * attention is split over (token, KV-head group) units with maq_pool_run. All buffers are allocated in
 * maq_model_create; maq_model_forward allocates nothing. Time is accounted in maq_model_stats.
 */
#define _POSIX_C_SOURCE 199309L
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    /* activations for up to B = max_batch tokens, row-major, one row per token */
    float *x;       /* [B][D] residual stream */
    float *xb;      /* [B][D] normed input of attention / MLP */
    float *q;       /* [B][n_heads*hd] queries (roped) */
    float *att_out; /* [B][n_heads*hd] attention output (before wo) */
    float *xb2;     /* [B][D] output of wo / w_down */
    float *hb;      /* [B][H] gate, then silu(gate)*up */
    float *hb2;     /* [B][H] up */
    void *act;      /* preprocessed activation, >= maq_act_bytes of every weight for B rows */
    float *att;     /* [n_threads][n_heads/n_kv_heads][ks] attention weights, one block per pool slot */
    float *att_max; /* [n_threads][n_heads/n_kv_heads] running score maxima */
    float *kb;          /* [B][n_kv_heads*hd] new keys (roped) before they go to the transposed cache */
    float *key_cache;   /* [L][n_kv_heads][hd][ks] roped keys, transposed (positions contiguous) */
    float *value_cache; /* [L][seq_len][n_kv_heads*hd] */
    float *rope_cos;    /* [seq_len][rope_dim/2] */
    float *rope_sin;    /* [seq_len][rope_dim/2] */
    int ks;             /* key cache row stride in floats (key_stride) */
} run_state;

/* seq_len rounded up to an odd number of 64-byte lines: the score loops read one position tile from each of the hd
 * rows of a head's keys, and rows a multiple of 4 KiB apart (seq_len 1024, 2048, ...) all map to one L1 set
 * (SmolLM2 pp512 at n_ctx 1024: attention 0.32 -> 0.25 s with the padded stride). */
static int key_stride(int S) {
    const int lines = (S + 15) / 16;
    return 16 * (lines | 1);
}

struct maq_model {
    maq_model_config cfg;
    maq_model_weights w;
    maq_layer_weights *layers; /* [L] copy */
    run_state s;
    int max_batch;
    int n_threads;
    maq_pool *pool;
    maq_model_stats stats;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size, int *fail) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) *fail = 1;
    return p;
}

static size_t act_need(const maq_weight *w, int B, size_t cur) {
    size_t b = maq_act_bytes(w, B);
    return b > cur ? b : cur;
}

void maq_model_free(maq_model *m) {
    if (!m) return;
    run_state *s = &m->s;
    free(s->x); free(s->xb); free(s->q); free(s->att_out); free(s->xb2); free(s->hb); free(s->hb2);
    free(s->act); free(s->att); free(s->att_max); free(s->kb);
    free(s->key_cache); free(s->value_cache); free(s->rope_cos); free(s->rope_sin);
    free(m->layers);
    if (m->pool) maq_pool_destroy(m->pool);
    free(m);
}

maq_model *maq_model_create(const maq_model_config *cfg, const maq_model_weights *w, int max_batch,
                            int n_threads) {
    if (!cfg || !w || max_batch < 1 || n_threads < 1) return NULL;
    maq_model *m = (maq_model *)calloc(1, sizeof(maq_model));
    if (!m) return NULL;
    int fail = 0;
    m->cfg = *cfg;
    m->w = *w;
    m->max_batch = max_batch;
    m->n_threads = n_threads;
    const int D = cfg->dim, H = cfg->hidden_dim, L = cfg->n_layers, B = max_batch;
    const int QD = cfg->n_heads * cfg->head_dim, KVD = cfg->n_kv_heads * cfg->head_dim;
    const int S = cfg->seq_len, R = cfg->rope_dim / 2;
    m->layers = (maq_layer_weights *)xcalloc((size_t)L, sizeof(maq_layer_weights), &fail);
    if (!fail) memcpy(m->layers, w->layers, (size_t)L * sizeof(maq_layer_weights));
    m->w.layers = m->layers;
    m->cfg.rope_inv_freq = NULL;
    run_state *s = &m->s;
    s->x = (float *)xcalloc((size_t)B * D, sizeof(float), &fail);
    s->xb = (float *)xcalloc((size_t)B * D, sizeof(float), &fail);
    s->xb2 = (float *)xcalloc((size_t)B * D, sizeof(float), &fail);
    s->q = (float *)xcalloc((size_t)B * QD, sizeof(float), &fail);
    s->att_out = (float *)xcalloc((size_t)B * QD, sizeof(float), &fail);
    s->hb = (float *)xcalloc((size_t)B * H, sizeof(float), &fail);
    s->hb2 = (float *)xcalloc((size_t)B * H, sizeof(float), &fail);
    const int rep = cfg->n_heads / cfg->n_kv_heads;
    s->ks = key_stride(S);
    s->att = (float *)xcalloc((size_t)n_threads * rep * s->ks, sizeof(float), &fail);
    s->att_max = (float *)xcalloc((size_t)n_threads * rep, sizeof(float), &fail);
    s->kb = (float *)xcalloc((size_t)B * KVD, sizeof(float), &fail);
    s->key_cache = (float *)xcalloc((size_t)L * s->ks * KVD, sizeof(float), &fail);
    s->value_cache = (float *)xcalloc((size_t)L * S * KVD, sizeof(float), &fail);
    s->rope_cos = (float *)xcalloc((size_t)S * (R ? R : 1), sizeof(float), &fail);
    s->rope_sin = (float *)xcalloc((size_t)S * (R ? R : 1), sizeof(float), &fail);
    size_t act = 0;
    if (!fail) {
        for (int l = 0; l < L; l++) {
            const maq_layer_weights *lw = &m->layers[l];
            act = act_need(&lw->wq, B, act); act = act_need(&lw->wk, B, act); act = act_need(&lw->wv, B, act);
            act = act_need(&lw->wo, B, act); act = act_need(&lw->w_gate, B, act);
            act = act_need(&lw->w_up, B, act); act = act_need(&lw->w_down, B, act);
        }
        act = act_need(&m->w.output, B, act);
    }
    s->act = xcalloc(act + 64, 1, &fail);
    if (!fail && cfg->rope_inv_freq) {
        /* angle = pos * inv_freq in float32, as transformers computes it; cos/sin in double, rounded once */
        for (int p = 0; p < S; p++)
            for (int i = 0; i < R; i++) {
                float ang = (float)p * cfg->rope_inv_freq[i];
                s->rope_cos[(size_t)p * R + i] = (float)cos((double)ang);
                s->rope_sin[(size_t)p * R + i] = (float)sin((double)ang);
            }
    }
    if (!fail) {
        m->pool = maq_pool_create(n_threads);
        if (!m->pool) fail = 1;
    }
    if (fail) {
        maq_model_free(m);
        return NULL;
    }
    return m;
}

int maq_model_max_batch(const maq_model *m) { return m->max_batch; }
int maq_model_threads(const maq_model *m) { return m->n_threads; }
void maq_model_get_stats(const maq_model *m, maq_model_stats *out) { *out = m->stats; }
void maq_model_reset_stats(maq_model *m) { memset(&m->stats, 0, sizeof(m->stats)); }

/* ------------------------------------------------------------------ small kernels */
/* out[B][D] = x[B][D] / rms(x) * w[D] */
static void rmsnorm(float *out, const float *x, const float *w, int B, int D, float eps) {
    for (int b = 0; b < B; b++) {
        const float *xr = x + (size_t)b * D;
        float *o = out + (size_t)b * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / D + (double)eps));
        for (int i = 0; i < D; i++) o[i] = (xr[i] * inv) * w[i];
    }
}

/* Rotate pairs (2i, 2i+1), i < R, of each of n_heads heads of B rows (row stride `stride` floats). */
static void rope(float *v, int B, int stride, int n_heads, int hd, int R, int pos, const float *cos_t,
                 const float *sin_t) {
    for (int b = 0; b < B; b++) {
        const float *c = cos_t + (size_t)(pos + b) * R;
        const float *s = sin_t + (size_t)(pos + b) * R;
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (size_t)b * stride + (size_t)h * hd;
            for (int i = 0; i < R; i++) {
                float x0 = x[2 * i], x1 = x[2 * i + 1];
                x[2 * i] = x0 * c[i] - x1 * s[i];
                x[2 * i + 1] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

/* ------------------------------------------------------------------ matrix products */
/* The activation layout of a weight type: MAQ2, MAQ3 and MAQ4 share one (maq.h, maq_act_bytes). */
static int act_kind(int type) { return type == MAQ_TYPE_MAQ3 || type == MAQ_TYPE_MAQ4 ? MAQ_TYPE_MAQ2 : type; }

typedef struct {
    int type, T;
    const float *signs;   /* the input rotation of the prepared activation (NULL: none) */
} act_tag;

/* Whether the prepared activation in tag serves w (same layout, T and input rotation). */
static int act_fits(const act_tag *tag, const maq_weight *w) {
    return tag->type == act_kind(w->type) && tag->T == w->T && tag->signs == w->in_signs;
}

static void act_prepare(maq_model *m, act_tag *tag, const maq_weight *w, const float *X, int B) {
    maq_act_prepare(w, X, B, m->s.act);
    tag->type = act_kind(w->type);
    tag->T = w->T;
    tag->signs = w->in_signs;
}

/* Y[B][w->P] = X[B][w->T] W^T, preparing X only when the previous product used another (activation kind, T,
 * input rotation), e.g. Q/K/V of mixed MAQ2 / MAQ3 / MAQ4 types share one preparation. */
static void matmul(maq_model *m, act_tag *tag, const maq_weight *w, const float *X, int B, float *Y) {
    if (!act_fits(tag, w)) act_prepare(m, tag, w, X, B);
    maq_matmul_act(w, m->s.act, B, Y, m->pool);
}

/* Ys[i] = X ws[i]^T for products of one input (Q/K/V, gate/up): one pool job when they share the activation kind,
 * T and input rotation (maq_matmul_act_multi), else one after another. */
static void matmul_group(maq_model *m, act_tag *tag, const maq_weight *const *ws, int n, const float *X, int B,
                         float *const *Ys) {
    for (int i = 1; i < n; i++) {
        if (act_kind(ws[i]->type) != act_kind(ws[0]->type) || ws[i]->T != ws[0]->T ||
            ws[i]->in_signs != ws[0]->in_signs) {
            for (int j = 0; j < n; j++) matmul(m, tag, ws[j], X, B, Ys[j]);
            return;
        }
    }
    if (!act_fits(tag, ws[0])) act_prepare(m, tag, ws[0], X, B);
    maq_matmul_act_multi(ws, n, m->s.act, B, Ys, m->pool);
}

/* ------------------------------------------------------------------ attention */
/* The hot loops below are plain C over `restrict` pointers with fixed-order lane sums, so the compiler vectorizes
 * them without reassociating anything (results do not depend on the ISA). On x86-64 GCC builds an AVX2 clone and
 * picks it at load time (target_clones); other targets get their baseline SIMD (SSE2, NEON). */
/* no-trapping-math lets GCC if-convert the exact min/max selections (clamps, running maxima) so these loops
 * vectorize; it changes no result (no reassociation, no contraction). Scoped with push/pop_options. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#define MAQ_VEC_POP 1
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(MAQ_NO_CLONES)
#define MAQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MAQ_CLONES
#endif

/* exp(x) for x in float range: Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial, max
 * relative error ~2e-7), written without library calls or branches so loops over it vectorize. */
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f;                 /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (x * 1.44269504088896341f + magic) - magic;
    float r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * r) * r + r + 1.0f;
    int32_t ki = (int32_t)(k == k ? k : 0.0f);       /* a NaN input stays NaN (in p) without a UB NaN->int cast */
    uint32_t bits = (uint32_t)(ki + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* h[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u, n elements. */
MAQ_CLONES void maq_swiglu(float *restrict g, const float *restrict u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + exp_poly(-g[i])) * u[i];
}

/* Fixed-size float vectors (GCC vector extensions): the compiler lowers a 16-float operation to one AVX-512, two
 * AVX2 or four SSE/NEON instructions, lane by lane, so the results do not depend on the clone. VF16(p): the 16
 * floats at p (any alignment; the build uses -fno-strict-aliasing). */
typedef float maq_vf16 __attribute__((vector_size(64)));
typedef float maq_vf16u __attribute__((vector_size(64), aligned(4)));
#define VF16(p) (*(maq_vf16u *)(p))

/* att[r][p] = scale * q[r] . k[p], p < n_pos, for the rep query heads of one KV head, from the transposed key
 * cache kt [hd][S] of that head (S: the row stride of kt and att); mx[r] = max_p att[r][p]. Each score is summed
 * over i = 0..hd-1 in order (q[0]*k[0] first) whatever the vector width. Full tiles of 32 positions run up to 4 heads at once: every key vector
 * loaded serves all of them, and their 2 x RT accumulators are independent chains (one head alone waits on the
 * add latency). */
#define MAQ_ATT_TILE 32
#define MAQ_ATT_RT 4      /* query heads per pass */
/* fn(RT, ...) with RT in 1..MAQ_ATT_RT as a compile-time constant: each case inlines its own copy of fn. */
#define MAQ_CONST_RT(RT, fn, ...)                     \
    do {                                              \
        switch (RT) {                                 \
        case 4: fn(4, __VA_ARGS__); break;            \
        case 3: fn(3, __VA_ARGS__); break;            \
        case 2: fn(2, __VA_ARGS__); break;            \
        default: fn(1, __VA_ARGS__); break;           \
        }                                             \
    } while (0)
static inline __attribute__((always_inline)) void scores_tile(const int RT, const float *restrict q, int hd,
                                                            const float *restrict kt, int S, int p0,
                                                            float *restrict att) {
    maq_vf16 acc[MAQ_ATT_RT][2];
    const maq_vf16 k0 = VF16(kt + p0), k1 = VF16(kt + p0 + 16);
    for (int r = 0; r < RT; r++) {
        acc[r][0] = q[(size_t)r * hd] * k0;
        acc[r][1] = q[(size_t)r * hd] * k1;
    }
    for (int i = 1; i < hd; i++) {
        const float *restrict k = kt + (size_t)i * S + p0;
        const maq_vf16 a = VF16(k), b = VF16(k + 16);
        for (int r = 0; r < RT; r++) {
            const float qi = q[(size_t)r * hd + i];
            acc[r][0] += qi * a;
            acc[r][1] += qi * b;
        }
    }
    for (int r = 0; r < RT; r++) {
        VF16(att + (size_t)r * S + p0) = acc[r][0];
        VF16(att + (size_t)r * S + p0 + 16) = acc[r][1];
    }
}
/* The last np < MAQ_ATT_TILE positions of one head: a[p] = sum_i q[i] * kt[i][p], i in order (as the full tiles). */
static inline void scores_tail(const float *restrict q, int hd, const float *restrict kt, int S, int np,
                               float *restrict a) {
    for (int p = 0; p < np; p++) a[p] = q[0] * kt[p];
    for (int i = 1; i < hd; i++) {
        const float qi = q[i];
        const float *restrict k = kt + (size_t)i * S;
        for (int p = 0; p < np; p++) a[p] += qi * k[p];
    }
}
MAQ_CLONES void maq_attn_scores(const float *restrict q, int rep, int hd, const float *restrict kt, int S,
                                int n_pos, float scale, float *restrict att, float *restrict mx) {
    for (int r0 = 0; r0 < rep; r0 += MAQ_ATT_RT) {
        const int RT = rep - r0 < MAQ_ATT_RT ? rep - r0 : MAQ_ATT_RT;
        const float *qr = q + (size_t)r0 * hd;
        float *ar = att + (size_t)r0 * S;
        for (int p0 = 0; p0 + MAQ_ATT_TILE <= n_pos; p0 += MAQ_ATT_TILE)
            MAQ_CONST_RT(RT, scores_tile, qr, hd, kt, S, p0, ar);
    }
    const int p0 = n_pos / MAQ_ATT_TILE * MAQ_ATT_TILE;
    if (p0 < n_pos)
        for (int r = 0; r < rep; r++)
            scores_tail(q + (size_t)r * hd, hd, kt + p0, S, n_pos - p0, att + (size_t)r * S + p0);
    for (int r = 0; r < rep; r++) {
        float *restrict a = att + (size_t)r * S;
        float m = -INFINITY;
        for (int p = 0; p < n_pos; p++) {
            a[p] *= scale;
            m = a[p] > m ? a[p] : m;
        }
        mx[r] = m;
    }
}

/* o[r][c0..c0+32) = sum_p a[r][p] * v[p][c0..c0+32) for RT heads (p in order from 0): every value vector loaded
 * serves all RT heads; 2 x RT independent accumulator chains. */
static inline __attribute__((always_inline)) void values_tile(const int RT, const float *restrict a, int att_stride,
                                                            const float *restrict vc, int kv_stride, int n_pos,
                                                            int c0, float *restrict o, int out_stride) {
    maq_vf16 acc[MAQ_ATT_RT][2];
    for (int r = 0; r < RT; r++) acc[r][0] = acc[r][1] = (maq_vf16){0};
    for (int p = 0; p < n_pos; p++) {
        const float *restrict v = vc + (size_t)p * kv_stride + c0;
        const maq_vf16 v0 = VF16(v), v1 = VF16(v + 16);
        for (int r = 0; r < RT; r++) {
            const float w = a[(size_t)r * att_stride + p];
            acc[r][0] += w * v0;
            acc[r][1] += w * v1;
        }
    }
    for (int r = 0; r < RT; r++) {
        VF16(o + (size_t)r * out_stride + c0) = acc[r][0];
        VF16(o + (size_t)r * out_stride + c0 + 16) = acc[r][1];
    }
}

static inline void values_any(const float *restrict a, const float *restrict vc, int kv_stride, int n_pos, int hd,
                              float *restrict o) {
    for (int i = 0; i < hd; i++) o[i] = 0.0f;
    for (int p = 0; p < n_pos; p++) {
        const float w = a[p];
        const float *restrict v = vc + (size_t)p * kv_stride;
        for (int i = 0; i < hd; i++) o[i] += w * v[i];
    }
}

/* att[r][p] <- softmax_p(att[r][p]) (given mx[r]), then out[r][0..hd) = sum_p att[r][p] * v[p]. */
MAQ_CLONES void maq_attn_values(float *restrict att, int att_stride, int rep, const float *restrict mx,
                                const float *restrict vc, int kv_stride, int n_pos, int hd, float *restrict out,
                                int out_stride) {
    for (int r = 0; r < rep; r++) {
        float *restrict a = att + (size_t)r * att_stride;
        const float m = mx[r];
        for (int p = 0; p < n_pos; p++) a[p] = exp_poly(a[p] - m);
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};   /* fixed-order lane sums: vectorizes, ISA-independent */
        int p = 0;
        for (; p + 8 <= n_pos; p += 8)
            for (int j = 0; j < 8; j++) acc[j] += a[p + j];
        float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; p < n_pos; p++) sum += a[p];
        const float inv = 1.0f / sum;
        for (int p = 0; p < n_pos; p++) a[p] *= inv;
    }
    if (hd % 32) {
        for (int r = 0; r < rep; r++)
            values_any(att + (size_t)r * att_stride, vc, kv_stride, n_pos, hd, out + (size_t)r * out_stride);
        return;
    }
    for (int r0 = 0; r0 < rep; r0 += MAQ_ATT_RT) {
        const int RT = rep - r0 < MAQ_ATT_RT ? rep - r0 : MAQ_ATT_RT;
        const float *ar = att + (size_t)r0 * att_stride;
        float *orr = out + (size_t)r0 * out_stride;
        for (int c0 = 0; c0 < hd; c0 += 32)
            MAQ_CONST_RT(RT, values_tile, ar, att_stride, vc, kv_stride, n_pos, c0, orr, out_stride);
    }
}

#ifdef MAQ_VEC_POP
#pragma GCC pop_options
#endif

typedef struct {
    maq_model *m;
    int layer, B, pos;
} att_task;

/* Units are (token b, KV head g): the rep = n_heads/n_kv_heads query heads of a group read K and V once. */
static void attention_task(void *ctx, int ith, int nth) {
    att_task *t = (att_task *)ctx;
    maq_model *m = t->m;
    const maq_model_config *c = &m->cfg;
    const int hd = c->head_dim, nkv = c->n_kv_heads, rep = c->n_heads / c->n_kv_heads;
    const int KVD = nkv * hd, QD = c->n_heads * hd, S = c->seq_len;
    const float scale = 1.0f / sqrtf((float)hd);
    const int KS = m->s.ks;
    const float *kc = m->s.key_cache + (size_t)t->layer * KS * KVD;
    const float *vc = m->s.value_cache + (size_t)t->layer * S * KVD;
    float *att = m->s.att + (size_t)ith * rep * KS;  /* [rep][KS] */
    float *mx = m->s.att_max + (size_t)ith * rep;    /* [rep] */
    /* Decode (few units): one query head per unit, so 2 threads split e.g. 9 heads 5:4 instead of 3 KV groups 2:1
     * (the same operations per head either way: a head's scores and values do not depend on its group mates). */
    const int per = nth == 1 || t->B * nkv >= 4 * nth ? rep : 1;   /* query heads per unit */
    const int upt = c->n_heads / per;                  /* units per token */
    const int n_units = t->B * upt;
    /* strided, not blocked: in a prefill a unit's cost grows with its token's position, so interleave them */
    for (int u = ith; u < n_units; u += nth) {
        const int b = u / upt, h0 = (u % upt) * per, g = h0 / rep;
        const int n_pos = t->pos + b + 1;
        const float *q = m->s.q + (size_t)b * QD + (size_t)h0 * hd;
        float *o = m->s.att_out + (size_t)b * QD + (size_t)h0 * hd;
        maq_attn_scores(q, per, hd, kc + (size_t)g * hd * KS, KS, n_pos, scale, att, mx);
        maq_attn_values(att, KS, per, mx, vc + (size_t)g * hd, KVD, n_pos, hd, o, hd);
    }
}

/* ------------------------------------------------------------------ forward */
/* One chunk of B <= max_batch tokens at positions pos..pos+B-1; logits per mode (see model.h). */
static void forward_chunk(maq_model *m, const int32_t *tokens, int B, int pos, float *logits, int mode) {
    const maq_model_config *c = &m->cfg;
    run_state *s = &m->s;
    const int D = c->dim, H = c->hidden_dim, hd = c->head_dim, R = c->rope_dim / 2;
    const int QD = c->n_heads * hd, KVD = c->n_kv_heads * hd, S = c->seq_len;
    double t0 = now_s(), tm = 0.0, ta = 0.0, t1;

    for (int b = 0; b < B; b++) maq_get_row(&m->w.tok_embd, tokens[b], s->x + (size_t)b * D);

    for (int l = 0; l < c->n_layers; l++) {
        const maq_layer_weights *lw = &m->layers[l];
        float *vdst = s->value_cache + ((size_t)l * S + pos) * KVD;
        act_tag tag = {-1, -1, NULL};

        rmsnorm(s->xb, s->x, lw->attn_norm, B, D, c->norm_eps);
        t1 = now_s();
        {
            const maq_weight *ws[3] = {&lw->wq, &lw->wk, &lw->wv};
            float *Ys[3] = {s->q, s->kb, vdst};
            matmul_group(m, &tag, ws, 3, s->xb, B, Ys);
        }
        tm += now_s() - t1;
        rope(s->q, B, QD, c->n_heads, hd, R, pos, s->rope_cos, s->rope_sin);
        rope(s->kb, B, KVD, c->n_kv_heads, hd, R, pos, s->rope_cos, s->rope_sin);
        {   /* keys -> transposed cache [L][n_kv][hd][ks] */
            float *kt = s->key_cache + (size_t)l * KVD * s->ks;
            for (int b = 0; b < B; b++)
                for (int j = 0; j < KVD; j++) kt[(size_t)j * s->ks + pos + b] = s->kb[(size_t)b * KVD + j];
        }

        t1 = now_s();
        att_task at = {m, l, B, pos};
        maq_pool_run(m->pool, attention_task, &at);
        ta += now_s() - t1;

        t1 = now_s();
        tag.type = -1;
        matmul(m, &tag, &lw->wo, s->att_out, B, s->xb2);
        tm += now_s() - t1;
        for (size_t i = 0; i < (size_t)B * D; i++) s->x[i] += s->xb2[i];

        rmsnorm(s->xb, s->x, lw->ffn_norm, B, D, c->norm_eps);
        t1 = now_s();
        tag.type = -1;
        {
            const maq_weight *ws[2] = {&lw->w_gate, &lw->w_up};
            float *Ys[2] = {s->hb, s->hb2};
            matmul_group(m, &tag, ws, 2, s->xb, B, Ys);
        }
        tm += now_s() - t1;
        maq_swiglu(s->hb, s->hb2, (size_t)B * H);
        t1 = now_s();
        tag.type = -1;
        matmul(m, &tag, &lw->w_down, s->hb, B, s->xb2);
        tm += now_s() - t1;
        for (size_t i = 0; i < (size_t)B * D; i++) s->x[i] += s->xb2[i];
    }

    if (mode != 0) {
        const int first = mode == 1 ? B - 1 : 0, nb = B - first;
        rmsnorm(s->xb, s->x + (size_t)first * D, m->w.output_norm, nb, D, c->norm_eps);
        t1 = now_s();
        act_tag tag = {-1, -1, NULL};
        matmul(m, &tag, &m->w.output, s->xb, nb, logits);
        double th = now_s() - t1;
        tm += th;
        m->stats.head += th;
    }
    double total = now_s() - t0;
    m->stats.matmul += tm;
    m->stats.attention += ta;
    m->stats.other += total - tm - ta;
}

int maq_model_forward(maq_model *m, const int32_t *tokens, int n, int pos, float *logits, int logits_mode) {
    const maq_model_config *c = &m->cfg;
    if (n < 0 || pos < 0 || logits_mode < 0 || logits_mode > 2 || (logits_mode && !logits)) return MAQ_FORWARD_ERR_ARG;
    if (n == 0) return MAQ_FORWARD_OK;
    if ((long long)pos + n > c->seq_len) return MAQ_FORWARD_ERR_POS;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) return MAQ_FORWARD_ERR_TOKEN;
    double t0 = now_s();
    for (int done = 0; done < n; done += m->max_batch) {
        int B = n - done < m->max_batch ? n - done : m->max_batch;
        int last = done + B == n;
        int mode = logits_mode == 2 ? 2 : (logits_mode == 1 && last ? 1 : 0);
        float *out = logits_mode == 2 ? logits + (size_t)done * c->vocab_size : logits;
        forward_chunk(m, tokens + done, B, pos + done, out, mode);
    }
    m->stats.total += now_s() - t0;
    m->stats.tokens += n;
    m->stats.calls += 1;
    return MAQ_FORWARD_OK;
}
