/* bench.c -- memory read-bandwidth helper for scripts/bench_kernel.py (not used by the model).
 *
 * maq_read_sum(buf, nbytes, pool): sums buf as uint64 words, the bytes split across the pool's threads
 * (8 independent accumulators per thread so the loop is load-bound, not add-latency-bound).
 * Returns the sum so the reads cannot be optimized away. nbytes is rounded down to a multiple of 64.
 */
#include <stdatomic.h>
#include <string.h>

#include "maq_internal.h"

typedef struct {
    const uint64_t *buf;
    size_t n64;                 /* uint64 words, multiple of 8 */
    _Atomic uint64_t total;
} read_task;

static void read_run(void *ctx, int ith, int nth) {
    read_task *t = (read_task *)ctx;
    size_t n_lines = t->n64 / 8;
    size_t l0 = n_lines * (size_t)ith / (size_t)nth, l1 = n_lines * (size_t)(ith + 1) / (size_t)nth;
    uint64_t a[8] = {0};
    for (size_t l = l0; l < l1; l++) {
        const uint64_t *p = t->buf + 8 * l;
        for (int k = 0; k < 8; k++) a[k] += p[k];
    }
    uint64_t s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    atomic_fetch_add(&t->total, s);
}

uint64_t maq_read_sum(const void *buf, size_t nbytes, maq_pool *pool) {
    read_task t;
    t.buf = (const uint64_t *)buf;
    t.n64 = nbytes / 64 * 8;
    atomic_init(&t.total, 0);
    maq_pool_run(pool, read_run, &t);
    return atomic_load(&t.total);
}
