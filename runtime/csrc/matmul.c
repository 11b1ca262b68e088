/* matmul.c -- public product entry points: dispatch by weight type, split output rows across the pool.
 *
 * Rows are handed out in chunks through atomic counters, one per slot's contiguous region of chunks: a slot
 * streams through its own region, then takes the chunks left in the others', so a slot that starts late (its core
 * busy with another process) simply finds less work; every row is computed by the same code whichever thread takes
 * it, so results do not depend on the number of threads. Several products sharing one activation (Q/K/V,
 * gate/up) can run as one job: their rows form one range [0, sum P) cut into chunks that never straddle two
 * weights.
 */
#include <stdatomic.h>

#include "maq_internal.h"

/* Chunks [next, end) of one slot's region (its own cache line: slots claim from their regions concurrently). */
#define MM_REGIONS 16
typedef struct {
    _Alignas(64) atomic_int next;
    int end;
    char pad[64 - sizeof(atomic_int) - sizeof(int)];
} mm_region;

typedef struct {
    const maq_weight *const *ws;   /* [n] */
    float *const *Ys;              /* [n] each [B][ws[i]->P] */
    int n;
    const uint8_t *act;            /* aligned activation rows */
    int B;
    int path;
    int chunk;                     /* rows per claim */
    int starts[MAQ_MULTI_MAX + 1]; /* chunk index where weight i starts; starts[n] = total chunks */
    int n_reg;                     /* regions: min(threads, MM_REGIONS) */
    mm_region reg[MM_REGIONS];     /* region r = chunks [r*N/n_reg, (r+1)*N/n_reg) of the N = starts[n] chunks */
} mm_task;

/* ------------------------------------------------------------------ per-type traits (maq_internal.h) */
/* The MAQ family: maq2_rows, then the int8 salient words where the tensor has them (maq_s8.c). */
static void maq_family_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    maq2_rows(w, act, B, p0, p1, Y, path);
    if (w->salw) maq_s8_rows(w, act, B, p0, p1, Y, path);
}
static void maq_family_get_row(const maq_weight *w, int p, float *out) {
    maq2_get_row(w, p, out);
    if (w->salw) maq_s8_get_row(w, p, out);
}

static const maq_type_traits TRAITS[MAQ_TYPE_MAQ4 + 1] = {
    [MAQ_TYPE_F32] = {float_act_rows_bytes, float_act_prepare, float_rows, float_get_row, NULL, NULL},
    [MAQ_TYPE_F16] = {float_act_rows_bytes, float_act_prepare, float_rows, float_get_row, NULL, NULL},
    [MAQ_TYPE_Q8_0] = {q8_act_rows_bytes, q8_act_prepare, q8_0_rows, q8_0_get_row, q8_r16_bytes, q8_r16_pack},
    [MAQ_TYPE_MAQ2] = {maq2_act_rows_bytes, maq2_act_prepare, maq_family_rows, maq_family_get_row, maq2_r16_bytes,
                       maq2_r16_pack},
    [MAQ_TYPE_MAQ3] = {maq2_act_rows_bytes, maq2_act_prepare, maq_family_rows, maq_family_get_row, maq2_r16_bytes,
                       maq2_r16_pack},
    [MAQ_TYPE_MAQ4] = {maq2_act_rows_bytes, maq2_act_prepare, maq_family_rows, maq_family_get_row, maq2_r16_bytes,
                       maq2_r16_pack},
};

const maq_type_traits *maq_traits(int type) { return &TRAITS[type]; }

size_t maq_r16_bytes(const maq_weight *w) { return TRAITS[w->type].r16_bytes ? TRAITS[w->type].r16_bytes(w) : 0; }
void maq_r16_pack(const maq_weight *w, void *dst) { TRAITS[w->type].r16_pack(w, dst); }

static void rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    TRAITS[w->type].rows(w, act, B, p0, p1, Y, path);
}

/* The next chunk for slot ith: from its own region first (consecutive rows: one weight stream per thread, the row
 * prefetch runs on across its chunks), then from the others' (a slot that started late or runs slower is helped). */
static int claim_chunk(mm_task *t, int ith) {
    for (int k = 0; k < t->n_reg; k++) {
        mm_region *r = &t->reg[(ith + k) % t->n_reg];
        if (atomic_load_explicit(&r->next, memory_order_relaxed) >= r->end) continue;
        const int c = atomic_fetch_add(&r->next, 1);
        if (c < r->end) return c;
    }
    return -1;
}

static void mm_run(void *ctx, int ith, int nth) {
    mm_task *t = (mm_task *)ctx;
    (void)nth;
    int c;
    while ((c = claim_chunk(t, ith)) >= 0) {
        int i = 0;
        while (c >= t->starts[i + 1]) i++;
        const maq_weight *w = t->ws[i];
        const int p0 = (c - t->starts[i]) * t->chunk;
        rows(w, t->act, t->B, p0, p0 + t->chunk < w->P ? p0 + t->chunk : w->P, t->Ys[i], t->path);
    }
}

/* Rows per claim: decode (B == 1) about 4 chunks per thread (long runs keep the row prefetch ahead of the
 * kernel; a claim costs one atomic), prefill about 8; multiples of 16 rows (whole cache lines of Y). */
static int chunk_rows(int total_rows, int nth, int B) {
    const int per = B == 1 ? 4 : 8;
    const int c = total_rows / (nth * per);
    return c < 16 ? 16 : (c + 15) / 16 * 16;
}

void maq_matmul_act_multi(const maq_weight *const *ws, int n, const void *act, int B, float *const *Ys,
                          maq_pool *pool) {
    const uint8_t *a = maq_act_align(act);
    const int path = maq_path_id();
    const int nth = maq_pool_size(pool);
    double work = 0.0;
    int total = 0;
    for (int i = 0; i < n; i++) {
        work += (double)ws[i]->P * ws[i]->T * B;
        total += ws[i]->P;
    }
    if (nth == 1 || work < 65536.0) {
        for (int i = 0; i < n; i++) rows(ws[i], a, B, 0, ws[i]->P, Ys[i], path);
        return;
    }
    mm_task t;
    t.ws = ws;
    t.Ys = Ys;
    t.n = n;
    t.act = a;
    t.B = B;
    t.path = path;
    t.chunk = chunk_rows(total, nth, B);
    t.starts[0] = 0;
    for (int i = 0; i < n; i++) t.starts[i + 1] = t.starts[i] + (ws[i]->P + t.chunk - 1) / t.chunk;
    const int N = t.starts[n];
    t.n_reg = nth < MM_REGIONS ? nth : MM_REGIONS;
    for (int r = 0; r < t.n_reg; r++) {
        atomic_init(&t.reg[r].next, (int)((long long)r * N / t.n_reg));
        t.reg[r].end = (int)((long long)(r + 1) * N / t.n_reg);
    }
    maq_pool_run(pool, mm_run, &t);
}

void maq_matmul_act(const maq_weight *w, const void *act, int B, float *Y, maq_pool *pool) {
    maq_matmul_act_multi(&w, 1, act, B, &Y, pool);
}

void maq_matmul_act_part(const maq_weight *w, const void *act, int B, float *Y, int ith, int nth) {
    const int units = (w->P + 15) / 16;   /* whole 16-row units, as chunk_rows: every share covers full lines of Y */
    const int p0 = (int)((long long)units * ith / nth) * 16, p1 = (int)((long long)units * (ith + 1) / nth) * 16;
    if (p0 < w->P) rows(w, maq_act_align(act), B, p0, p1 < w->P ? p1 : w->P, Y, maq_path_id());
}

void maq_matmul(const maq_weight *w, const float *X, int B, float *Y, void *scratch, maq_pool *pool) {
    maq_act_prepare(w, X, B, scratch);
    maq_matmul_act(w, scratch, B, Y, pool);
}

void maq_get_row(const maq_weight *w, int p, float *out) { TRAITS[w->type].get_row(w, p, out); }
