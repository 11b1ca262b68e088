/* maq.h -- the C core of MAQ: weight descriptors, activation preprocessing, mixed-width products,
 * a persistent thread pool. Portable C99/C11. Python validates every argument; C trusts them.
 *
 * Logical weight W has P output rows and T inputs (GGUF ne = [T, P]); y = W x, y[p] = sum_t W[p,t] x[t].
 * The MAQ byte layouts are defined by runtime/format.py and docs/FORMAT.md (one 32-bit word per 16 inputs,
 * 2-bit words: code of input j at bits 2j..2j+1; salient words: 4 int8 means, byte k covers inputs 4k..4k+3;
 * MAQ3 / MAQ4: those 2-bit words hold the low 2 bits of 3- / 4-bit codes, a .hi plane the rest).
 */
#ifndef MAQ_H
#define MAQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ SIMD path selection */
/* Compiled paths, comma separated: "scalar,sse,avx2" (x86-64) or "scalar,neon,dotprod" (aarch64). */
const char *maq_compiled_paths(void);
/* The active path ("scalar", "sse", "avx2", "neon", "dotprod"). Default: the widest compiled path the CPU supports,
 * unless the environment variable MAQ_FORCE_PATH names another (read once, at first use). */
const char *maq_active_path(void);
/* Force a path by name; returns 0 on success, -1 if that path is not compiled in / not supported. */
int maq_set_path(const char *name);

/* ------------------------------------------------------------------ thread pool */
typedef struct maq_pool maq_pool;
/* A task is run as fn(ctx, ith, nth) for ith = 0..nth-1, one call per pool thread (the caller is thread 0). */
typedef void (*maq_task_fn)(void *ctx, int ith, int nth);
/* Create a pool of n_threads (>= 1) workers, created once; NULL on failure. Workers sleep on a condition
 * variable between jobs (a short bounded spin first); no thread is created per call. */
maq_pool *maq_pool_create(int n_threads);
void maq_pool_destroy(maq_pool *pool);
int maq_pool_size(const maq_pool *pool);
/* Run fn on every thread of the pool and return when all are done. pool may be NULL (runs fn(ctx, 0, 1)). */
void maq_pool_run(maq_pool *pool, maq_task_fn fn, void *ctx);

/* ------------------------------------------------------------------ weights */
enum maq_type {
    MAQ_TYPE_F32  = 0,    /* ggml F32:  float  [P][T] */
    MAQ_TYPE_F16  = 1,    /* ggml F16:  uint16 [P][T] (IEEE half) */
    MAQ_TYPE_Q8_0 = 8,    /* ggml Q8_0: per row T/32 blocks of { uint16 d (half); int8 qs[32]; } = 34 bytes */
    MAQ_TYPE_MAQ2 = 100,  /* MAQ2: words + bitmap + scales + rowscale (format.py) */
    MAQ_TYPE_MAQ3 = 101,  /* MAQ3: words (low 2 bits of 3-bit codes) + hi uint16 + scales + rowscale */
    MAQ_TYPE_MAQ4 = 102   /* MAQ4: words (low 2 bits of 4-bit codes) + hi int32 + scales + rowscale */
};

typedef struct {
    int type;                   /* enum maq_type */
    int T, P;                   /* inputs per row, output rows */
    int G;                      /* MAQ2/3/4: scale group (32, 64, 128); else 0 */
    const void *data;           /* F32/F16/Q8_0: rows; MAQ2/3/4: words int32 [P][T/16] */
    const uint8_t *bitmap;      /* MAQ2: [P][ceil(T/128)]; MAQ3/4: unused */
    const uint8_t *scales;      /* MAQ2/3/4: [P][2*ceil(T/G)]: sc uint8 x ng, then m int8 x ng */
    const uint16_t *rowscale;   /* MAQ2/3/4: [P][3] half: d, dmin, dsal (dsal unused by MAQ3/4) */
    const void *hi;             /* MAQ3: uint16 [P][T/16] (bit j = bit 2 of input j's code);
                                 * MAQ4: uint32 [P][T/16] (bits 2j..2j+1 = bits 2..3 of input j's code); else unused */
    const int8_t *salw;         /* MAQ2, int8 salient coding: int8 [16*N] codes of the salient words; else NULL */
    const int32_t *saloff;      /* MAQ2, int8 salient coding: [P+1] salient words before row p (maq_s8.c) */
    const float *in_signs;      /* input rotation (format.py / docs/FORMAT.md section 10), any type: [T] +-1 signs,
                                 * or NULL (none). The weight holds W' = W R^T; maq_act_prepare multiplies R x */
    int in_block;               /* Walsh-Hadamard block length of the rotation (a power of two dividing T) */
    const uint8_t *r16;         /* MAQ2/3/4, Q8_0: the rows repacked into 16-row panels (maq_r16_pack), 64-byte aligned,
                                 * read instead of the parts above on the VNNI path; or NULL */
} maq_weight;

/* Load-time repack of a MAQ2 (no salient words) / MAQ3 / MAQ4 or Q8_0 weight into 16-row interleaved panels
 * (runtime/csrc/maq2_r16.c, q8_0.c): bytes needed,
 * or 0 where the weight or this CPU does not qualify (the products then read the file's layout); and the packing
 * into dst (64-byte aligned, maq_r16_bytes(w) bytes). Set w->r16 = dst afterwards. */
size_t maq_r16_bytes(const maq_weight *w);
void maq_r16_pack(const maq_weight *w, void *dst);
/* Hand the whole pages inside [p, p + n) back to the OS, where they hold bytes [offset, offset + n) of the file at
 * path: remap 0, they are a read-only mapping of that file already; remap 1, they are a private anonymous copy, first
 * replaced by a private mapping of the file at the same addresses (only if the file still holds the same bytes).
 * Then madvise(MADV_DONTNEED): the memory leaves the process, the contents stay readable (read from the file again
 * on the next touch). 0 on success; -1 (nothing changed, or on a failed remap nothing but the check) if the file
 * cannot be opened or mapped, differs, the page offsets do not agree, or not on Linux. */
int maq_pages_from_file(const void *p, size_t n, const char *path, uint64_t offset, int remap);

/* Dequantize row p of w into out[T] (float). Used for embedding lookups and tests. */
void maq_get_row(const maq_weight *w, int p, float *out);

/* ------------------------------------------------------------------ activations */
/* Bytes of scratch needed to hold B preprocessed activation rows for products with w. Depends only on
 * (w->type, w->T, w->in_signs): weights of the same type, T and input rotation share one preprocessed activation;
 * MAQ2, MAQ3 and MAQ4 have one activation layout, so a MAQ2 activation also serves MAQ3/MAQ4 weights of the same
 * T (and vice versa). A rotated weight's scratch also holds one float row of T for the rotated input. */
size_t maq_act_bytes(const maq_weight *w, int B);
/* Preprocess X [B][T] (float) for products with w (e.g. int8 quantization with block scales and sums); with an
 * input rotation each row is first replaced by R x (maq_rotate_row). */
void maq_act_prepare(const maq_weight *w, const float *X, int B, void *act);
/* out[T] = R x: x * signs, then the unnormalized Walsh-Hadamard transform of each block of `block` inputs
 * (butterflies over spans 1, 2, 4, ...: (a, b) -> (a + b, a - b)), then times 1/sqrt(block) (exact for even
 * log2(block)). Same operations in the same order as format.rotate (float32), so the results are identical. */
void maq_rotate_row(const float *x, const float *signs, int T, int block, float *out);

/* ------------------------------------------------------------------ products */
/* Y [B][P] = X W^T from a preprocessed activation; rows of W split across the pool's threads.
 * B == 1 is the matrix-vector product (decode); B > 1 reuses each decoded word for all B tokens (prefill). */
void maq_matmul_act(const maq_weight *w, const void *act, int B, float *Y, maq_pool *pool);
/* n products sharing one preprocessed activation (same activation kind and T, e.g. Q/K/V or gate/up) as one pool
 * job: Ys[i] [B][ws[i]->P] = X ws[i]^T; one wake-up and one join of the threads instead of n (decode runs ~7 products
 * per layer; each join costs the slowest thread's tail). Results equal n maq_matmul_act calls. n <= MAQ_MULTI_MAX. */
#define MAQ_MULTI_MAX 4
void maq_matmul_act_multi(const maq_weight *const *ws, int n, const void *act, int B, float *const *Ys,
                          maq_pool *pool);
/* Share ith of nth of the product, for a caller that runs its own threads (the llama.cpp extension's ggml threads):
 * rows [p0, p1) of Y [B][P], cut at multiples of 16 rows; the nth calls together equal maq_matmul_act. */
void maq_matmul_act_part(const maq_weight *w, const void *act, int B, float *Y, int ith, int nth);
/* Convenience: maq_act_prepare into scratch (>= maq_act_bytes(w, B) bytes) then maq_matmul_act. */
void maq_matmul(const maq_weight *w, const float *X, int B, float *Y, void *scratch, maq_pool *pool);

/* ------------------------------------------------------------------ additions (kernel engineer) */
/* Paths compiled in AND supported by this CPU, comma separated, narrow to wide (e.g. "scalar,sse,avx2"). */
const char *maq_supported_paths(void);
/* Benchmark helper: sum of buf viewed as uint64 (nbytes rounded down to 64), split across the pool's
 * threads; used by scripts/bench_kernel.py to measure read bandwidth. */
uint64_t maq_read_sum(const void *buf, size_t nbytes, maq_pool *pool);
/* Diagnostics: jobs of this pool that stalled on a preempted worker (each starts a solo period, see below). */
long long maq_pool_stalls(const maq_pool *pool);
/* Notes on the contract above:
 * - act / scratch need no particular alignment: maq_act_bytes includes 64 bytes of slack and the
 *   activation is placed at the first 64-byte boundary inside the buffer (same pointer for prepare/matmul).
 * - maq_pool_run: ith is a work-slot index, not a thread identity: a slot that no worker has picked up
 *   when the caller finishes slot 0 is run by the caller itself, and after a stall on a preempted worker
 *   the caller runs every slot for a while (a core busy with another process never stalls every job).
 *   Concurrent callers are serialized; calling maq_pool_run from inside a task of the same pool deadlocks.
 * - Every path returns bit-identical results (fixed integer/float operation order, see the kernel .c files). */

#ifdef __cplusplus
}
#endif
#endif /* MAQ_H */
