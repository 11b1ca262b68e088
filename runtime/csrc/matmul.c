/* matmul.c -- public product entry points: dispatch by weight type, split output rows across the pool.
 *
 * Rows are handed out in chunks through an atomic counter, so a slot that starts late (its core busy with
 * another process) simply finds less work; every row is computed by the same code whichever thread takes
 * it, so results do not depend on the number of threads.
 */
#include <stdatomic.h>

#include "maq_internal.h"

typedef struct {
    const maq_weight *w;
    const uint8_t *act;     /* aligned activation rows */
    int B;
    float *Y;               /* [B][P] */
    int path;
    int chunk;              /* rows per claim */
    atomic_int next;        /* next unclaimed row */
} mm_task;

static void rows(const mm_task *t, int p0, int p1) {
    switch (t->w->type) {
    case MAQ_TYPE_MAQ2:
    case MAQ_TYPE_MAQ3:
    case MAQ_TYPE_MAQ4:
        maq2_rows(t->w, t->act, t->B, p0, p1, t->Y, t->path);
        if (t->w->salw) maq_s8_rows(t->w, t->act, t->B, p0, p1, t->Y, t->path);   /* int8 salient words */
        break;
    case MAQ_TYPE_Q8_0: q8_0_rows(t->w, t->act, t->B, p0, p1, t->Y, t->path); break;
    default: float_rows(t->w, t->act, t->B, p0, p1, t->Y, t->path); break;
    }
}

static void mm_run(void *ctx, int ith, int nth) {
    mm_task *t = (mm_task *)ctx;
    (void)ith;
    (void)nth;
    const int P = t->w->P;
    for (;;) {
        int p0 = atomic_fetch_add(&t->next, t->chunk);
        if (p0 >= P) break;
        rows(t, p0, p0 + t->chunk < P ? p0 + t->chunk : P);
    }
}

void maq_matmul_act(const maq_weight *w, const void *act, int B, float *Y, maq_pool *pool) {
    mm_task t;
    t.w = w;
    t.act = maq_act_align(act);
    t.B = B;
    t.Y = Y;
    t.path = maq_path_id();
    const int nth = maq_pool_size(pool);
    const double work = (double)w->P * w->T * B;
    if (nth == 1 || work < 65536.0) {
        rows(&t, 0, w->P);
        return;
    }
    /* about 8 chunks per thread, multiples of 16 rows (whole cache lines of Y) */
    int chunk = w->P / (nth * 8);
    chunk = chunk < 16 ? 16 : (chunk + 15) / 16 * 16;
    t.chunk = chunk;
    atomic_init(&t.next, 0);
    maq_pool_run(pool, mm_run, &t);
}

void maq_matmul(const maq_weight *w, const float *X, int B, float *Y, void *scratch, maq_pool *pool) {
    maq_act_prepare(w, X, B, scratch);
    maq_matmul_act(w, scratch, B, Y, pool);
}

void maq_get_row(const maq_weight *w, int p, float *out) {
    switch (w->type) {
    case MAQ_TYPE_MAQ2:
    case MAQ_TYPE_MAQ3:
    case MAQ_TYPE_MAQ4:
        maq2_get_row(w, p, out);
        if (w->salw) maq_s8_get_row(w, p, out);
        break;
    case MAQ_TYPE_Q8_0: q8_0_get_row(w, p, out); break;
    default: float_get_row(w, p, out); break;
    }
}
