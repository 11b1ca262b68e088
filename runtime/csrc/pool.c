/* pool.c -- persistent thread pool (pthreads).
 *
 * A pool of n threads = the caller + (n - 1) workers created once in maq_pool_create.
 * A job has n "slots" (ith = 0..n-1). The caller always runs slot 0; idle workers claim the other slots
 * with an atomic compare-and-swap on one 64-bit word (generation << 32 | next free slot), and when the
 * caller has finished its own slot it claims and runs any slot no worker has taken yet. So a worker that is
 * descheduled (another process holds its core) never makes the caller wait a whole time slice: the caller
 * does that share itself. ith is therefore a work-slot index, not a thread identity.
 *
 * Waiting: workers spin (with a CPU pause) for at most MAQ_SPIN_NS after the last job, yielding the core
 * (sched_yield) every 64 spins after MAQ_YIELD_NS so a spinning thread never keeps a runnable one waiting,
 * then sleep on a condition variable; the caller likewise spins at most MAQ_SPIN_NS for running slots.
 * Contention: a worker that is preempted while it runs a slot still makes the caller wait until it is scheduled
 * again. When that happens (the caller waited longer than MAQ_SPIN_NS and longer than a quarter of the time its
 * own slots took), jobs run all their slots on the caller alone for the next MAQ_SOLO_NS (doubling per
 * consecutive stall, up to 1.3 s), then the workers are tried again: a core kept busy by another process costs
 * a stall only now and then instead of on every job, and a quiet machine never triggers it.
 * No thread is created per call; nothing here calls exit().
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "maq_internal.h"

#if defined(MAQ_X86)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAQ_SPIN_NS 200000ll  /* 0.2 ms: covers the gaps between kernels of one decode step */
#define MAQ_YIELD_NS 30000ll  /* after 30 us of spinning, yield the core every 64 spins (oversubscribed machine) */
#define MAQ_SOLO_NS 20000000ll /* 20 ms of jobs run by the caller alone after a stall on a preempted worker, */
#define MAQ_SOLO_MAX_SHIFT 6   /* doubled per consecutive stall up to 20 ms << 6 = 1.3 s */

struct maq_pool {
    int n;                        /* slots per job = threads incl. the caller */
    int n_started;                /* workers actually started */
    pthread_t *threads;           /* [n - 1] */
    pthread_mutex_t mu;           /* guards the condition variables and `stop` */
    pthread_cond_t cv_work;       /* workers sleep here */
    pthread_cond_t cv_done;       /* the caller sleeps here */
    pthread_mutex_t run_mu;       /* serializes concurrent maq_pool_run callers */
    _Atomic uint64_t state;       /* generation << 32 | next unclaimed slot */
    atomic_int done;              /* finished slots of the current job */
    atomic_int n_sleeping;        /* workers waiting on cv_work */
    atomic_int caller_sleeping;   /* 1 while the caller waits on cv_done */
    int64_t solo_until;           /* caller only (under run_mu): run jobs without the workers until then */
    int stall_streak;             /* caller only: consecutive parallel jobs that stalled */
    long long n_stalls;           /* caller only: stalls detected (diagnostics) */
    maq_task_fn fn;               /* current job (written before `state` is published) */
    void *ctx;
    atomic_int stop;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Claim one slot of the job published as generation `gen`; returns the slot or -1. */
static int claim(maq_pool *pool, uint32_t gen) {
    uint64_t s = atomic_load(&pool->state);
    for (;;) {
        if ((uint32_t)(s >> 32) != gen || (int)(uint32_t)s >= pool->n) return -1;
        if (atomic_compare_exchange_weak(&pool->state, &s, s + 1)) return (int)(uint32_t)s;
    }
}

static void finish_slot(maq_pool *pool) {
    if (atomic_fetch_add(&pool->done, 1) + 1 == pool->n && atomic_load(&pool->caller_sleeping)) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_signal(&pool->cv_done);
        pthread_mutex_unlock(&pool->mu);
    }
}

static void *worker_main(void *arg) {
    maq_pool *pool = (maq_pool *)arg;
    uint32_t seen = 0;                         /* generation 0 = created, no job */
    for (;;) {
        /* wait for a new generation: bounded spin, then sleep */
        int64_t t0 = now_ns();
        int spins = 0;
        uint32_t gen;
        for (;;) {
            gen = (uint32_t)(atomic_load_explicit(&pool->state, memory_order_acquire) >> 32);
            if (gen != seen) break;
            CPU_RELAX();
            if ((++spins & 63) != 0) continue;
            const int64_t spent = now_ns() - t0;
            if (spent > MAQ_YIELD_NS) sched_yield();
            if (spent > MAQ_SPIN_NS) {
                pthread_mutex_lock(&pool->mu);
                atomic_fetch_add(&pool->n_sleeping, 1);
                while (!atomic_load(&pool->stop) && (uint32_t)(atomic_load(&pool->state) >> 32) == seen)
                    pthread_cond_wait(&pool->cv_work, &pool->mu);
                atomic_fetch_sub(&pool->n_sleeping, 1);
                pthread_mutex_unlock(&pool->mu);
                if (atomic_load(&pool->stop)) return NULL;
                t0 = now_ns();
            }
        }
        seen = gen;
        int slot;
        while ((slot = claim(pool, gen)) >= 0) {
            /* fn/ctx belong to `gen`: the caller cannot publish a new job before this slot finishes */
            pool->fn(pool->ctx, slot, pool->n);
            finish_slot(pool);
        }
        if (atomic_load(&pool->stop)) return NULL;
    }
}

maq_pool *maq_pool_create(int n_threads) {
    if (n_threads < 1) return NULL;
    maq_pool *pool = (maq_pool *)calloc(1, sizeof(*pool));
    if (!pool) return NULL;
    pool->n = n_threads;
    atomic_init(&pool->state, (uint64_t)0 << 32 | (uint32_t)n_threads);   /* generation 0: nothing to claim */
    atomic_init(&pool->done, 0);
    atomic_init(&pool->n_sleeping, 0);
    atomic_init(&pool->caller_sleeping, 0);
    atomic_init(&pool->stop, 0);
    if (pthread_mutex_init(&pool->mu, NULL) || pthread_mutex_init(&pool->run_mu, NULL) ||
        pthread_cond_init(&pool->cv_work, NULL) || pthread_cond_init(&pool->cv_done, NULL)) {
        free(pool);
        return NULL;
    }
    if (n_threads > 1) {
        pool->threads = (pthread_t *)calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!pool->threads) {
            maq_pool_destroy(pool);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&pool->threads[i], NULL, worker_main, pool)) {
                maq_pool_destroy(pool);
                return NULL;
            }
            pool->n_started++;
        }
    }
    return pool;
}

void maq_pool_destroy(maq_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    /* bump the generation so spinning workers leave their loop; nothing is claimable (slot = n) */
    uint64_t s = atomic_load(&pool->state);
    atomic_store(&pool->state, ((s >> 32) + 1) << 32 | (uint32_t)pool->n);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_mu);
    pthread_cond_destroy(&pool->cv_work);
    pthread_cond_destroy(&pool->cv_done);
    free(pool);
}

int maq_pool_size(const maq_pool *pool) { return pool ? pool->n : 1; }

long long maq_pool_stalls(const maq_pool *pool) { return pool ? pool->n_stalls : 0; }

void maq_pool_run(maq_pool *pool, maq_task_fn fn, void *ctx) {
    if (!pool || pool->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    if (pool->solo_until) {                      /* recent stall: every slot here, workers untouched */
        if (now_ns() < pool->solo_until) {
            for (int i = 0; i < pool->n; i++) fn(ctx, i, pool->n);
            pthread_mutex_unlock(&pool->run_mu);
            return;
        }
        pool->solo_until = 0;
    }
    const int64_t t_start = now_ns();
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store(&pool->done, 0);
    uint32_t gen = (uint32_t)(atomic_load(&pool->state) >> 32) + 1;
    atomic_store(&pool->state, (uint64_t)gen << 32 | 1u);            /* slot 0 is the caller's */
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv_work);
        pthread_mutex_unlock(&pool->mu);
    }
    fn(ctx, 0, pool->n);
    finish_slot(pool);
    int slot;
    while ((slot = claim(pool, gen)) >= 0) {     /* slots no worker has started: run them here */
        fn(ctx, slot, pool->n);
        finish_slot(pool);
    }
    const int64_t t_own = now_ns();
    int spins = 0;
    while (atomic_load_explicit(&pool->done, memory_order_acquire) < pool->n) {
        CPU_RELAX();
        if ((++spins & 63) != 0) continue;
        const int64_t spent = now_ns() - t_own;
        if (spent > MAQ_YIELD_NS) sched_yield();
        if (spent > MAQ_SPIN_NS) {
            pthread_mutex_lock(&pool->mu);
            atomic_store(&pool->caller_sleeping, 1);
            while (atomic_load(&pool->done) < pool->n) pthread_cond_wait(&pool->cv_done, &pool->mu);
            atomic_store(&pool->caller_sleeping, 0);
            pthread_mutex_unlock(&pool->mu);
            break;
        }
    }
    if (spins >= 64) {                           /* waited long: was a worker preempted mid-slot? */
        const int64_t waited = now_ns() - t_own;
        if (waited > MAQ_SPIN_NS && 4 * waited > t_own - t_start) {
            pool->solo_until = now_ns() + (MAQ_SOLO_NS << pool->stall_streak);
            if (pool->stall_streak < MAQ_SOLO_MAX_SHIFT) pool->stall_streak++;
            pool->n_stalls++;
        } else {
            pool->stall_streak = 0;
        }
    } else {
        pool->stall_streak = 0;
    }
    pthread_mutex_unlock(&pool->run_mu);
}
