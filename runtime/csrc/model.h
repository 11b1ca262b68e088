/* model.h -- the whole Llama forward in C over the maq.h kernels (llama2.c style: config / weights / state).
 *
 * Python (runtime/model.py) validates the GGUF, fills these structs with pointers into the mapped file and calls
 * maq_model_forward once per decode step or prompt chunk; nothing is allocated after maq_model_create.
 * Conventions: RMSNorm; RoPE on adjacent pairs (2i, 2i+1) of the first rope_dim dims of each head (llama.cpp's
 * LLAMA mode; GGUF Q/K rows are permuted by the HF converter so this equals transformers' rotate-half);
 * grouped-query attention over a float KV cache; SwiGLU MLP; tied or separate output head.
 * Everything outside preprocessor lines below the cdef marker is parsed by cffi (runtime/_build.py).
 */
/* cdef */
#ifndef MAQ_MODEL_H
#define MAQ_MODEL_H

#include "maq.h"

typedef struct {
    int dim;            /* D: model width */
    int hidden_dim;     /* H: MLP width */
    int n_layers;       /* L */
    int n_heads;        /* query heads */
    int n_kv_heads;     /* key/value heads (n_heads % n_kv_heads == 0) */
    int head_dim;       /* hd: Q/K/V width per head */
    int vocab_size;     /* V */
    int seq_len;        /* KV cache capacity in positions (n_ctx) */
    int rope_dim;       /* rotated dims per head, even, <= head_dim */
    float norm_eps;     /* RMSNorm epsilon */
    const float *rope_inv_freq; /* [rope_dim/2]: angle per position of pair i, scaling applied (copied) */
} maq_model_config;

typedef struct {
    const float *attn_norm; /* [D] */
    maq_weight wq;          /* [n_heads*hd, D] */
    maq_weight wk;          /* [n_kv_heads*hd, D] */
    maq_weight wv;          /* [n_kv_heads*hd, D] */
    maq_weight wo;          /* [D, n_heads*hd] */
    const float *ffn_norm;  /* [D] */
    maq_weight w_gate;      /* [H, D] */
    maq_weight w_up;        /* [H, D] */
    maq_weight w_down;      /* [D, H] */
} maq_layer_weights;

typedef struct {
    maq_weight tok_embd;               /* [V, D] */
    const maq_layer_weights *layers;   /* [L] (copied) */
    const float *output_norm;          /* [D] */
    maq_weight output;                 /* [V, D]; the tok_embd descriptor when tied */
} maq_model_weights;

/* Time spent inside maq_model_forward, accumulated since the last reset (seconds). */
typedef struct {
    double matmul;      /* maq_act_prepare + maq_matmul_act (all layers and the head) */
    double head;        /* the output head's share of matmul */
    double attention;   /* scores, softmax, weighted values (maq_pool_run over heads) */
    double other;       /* embedding, norms, RoPE, SwiGLU, residuals */
    double total;       /* wall time of maq_model_forward calls */
    long long tokens;   /* tokens processed */
    long long calls;    /* maq_model_forward calls */
} maq_model_stats;

typedef struct maq_model maq_model;

/* Allocate the run state (activations for max_batch tokens, KV cache for cfg->seq_len positions, scratch) and
 * a pool of n_threads. The weight memory is borrowed and must outlive the model. NULL on allocation failure. */
maq_model *maq_model_create(const maq_model_config *cfg, const maq_model_weights *w, int max_batch,
                            int n_threads);
void maq_model_free(maq_model *m);

/* Run tokens[0..n-1] at positions pos..pos+n-1 (in chunks of max_batch), filling the KV cache.
 * logits_mode 0: no logits; 1: logits [V] of the last token; 2: logits [n][V] of every token.
 * Returns MAQ_FORWARD_OK, or a MAQ_FORWARD_ERR_* code below (read by runtime/model.py through cffi). */
#define MAQ_FORWARD_OK 0
#define MAQ_FORWARD_ERR_POS -1     /* positions beyond seq_len */
#define MAQ_FORWARD_ERR_TOKEN -2   /* a token id outside the vocabulary */
#define MAQ_FORWARD_ERR_ARG -3     /* bad argument */
int maq_model_forward(maq_model *m, const int32_t *tokens, int n, int pos, float *logits, int logits_mode);

int maq_model_max_batch(const maq_model *m);
int maq_model_threads(const maq_model *m);
void maq_model_get_stats(const maq_model *m, maq_model_stats *out);
void maq_model_reset_stats(maq_model *m);

#endif /* MAQ_MODEL_H */
