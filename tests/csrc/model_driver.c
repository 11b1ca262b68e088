/* model_driver.c -- run runtime/csrc/model.c's whole forward pass from a file, outside Python.
 *
 * Used by tests/runtime/test_sanitizers.py (built with -fsanitize=address,undefined) and
 * tests/runtime/test_arm_forward.py (cross-built for aarch64, run under qemu-aarch64). The test writes the
 * model exactly as runtime/model.py hands it to C (config, RoPE angles, every weight's parts), so the logits
 * can be compared with the Python extension's.
 *
 * usage: model_driver PATH IN OUT       (PATH: scalar | sse | avx2 | neon | dotprod | default)
 * IN (little-endian):
 *   char magic[4] = "MAQM"; int32 version = 2;
 *   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, seq_len, rope_dim,
 *         max_batch, n_threads, n_tokens, tied;          (tied: 1 = output is tok_embd, no output record)
 *   float norm_eps; float rope_inv_freq[rope_dim / 2]; int32 tokens[n_tokens];
 *   weight tok_embd;
 *   per layer: vector attn_norm; weight wq, wk, wv, wo; vector ffn_norm; weight w_gate, w_up, w_down;
 *   vector output_norm; [weight output if !tied]
 *   weight = int32 type, T, P, G; int64 n_data, n_bitmap, n_scales, n_rowscale, n_hi; the five byte blobs
 *            (type: enum maq_type; MAQ2 has a bitmap, MAQ3 / MAQ4 a hi part; unused parts have 0 bytes)
 *   vector = int64 n; float v[n]
 * OUT: float prefill[n_tokens][V]   (one maq_model_forward over all tokens, logits of every token, in chunks
 *                                     of max_batch)
 *      float decode[n_tokens][V]    (a second model: one token per call, logits of the last token)
 * stdout: "path=<active> compiled=<list>". Exit 0 ok, 2 path unavailable, 1 any other error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maq.h"
#include "driver_io.h"
#include "model.h"

#define MAX_BLOBS 4096

static void *g_blobs[MAX_BLOBS];   /* every allocation, freed at exit (LeakSanitizer stays quiet) */
static int g_nblobs;

static void *keep(void *p) {
    if (p && g_nblobs < MAX_BLOBS) g_blobs[g_nblobs++] = p;
    return p;
}

static int rd(FILE *f, void *dst, size_t n) { return fread(dst, 1, n, f) == n ? 0 : -1; }

/* n bytes into a fresh buffer (exactly n bytes, so a read past the end of a part is an ASan report) */
static void *blob(FILE *f, int64_t n, int *err) {
    if (n < 0 || n > ((int64_t)1 << 34)) {
        *err = 1;
        return NULL;
    }
    void *p = keep(malloc(n > 0 ? (size_t)n : 1));
    if (!p || (n > 0 && rd(f, p, (size_t)n))) *err = 1;
    return p;
}

static int read_weight(FILE *f, maq_weight *w, int *err) {
    int32_t h[4];
    int64_t s[5];
    if (rd(f, h, sizeof h) || rd(f, s, sizeof s)) return *err = 1;
    memset(w, 0, sizeof *w);
    w->type = h[0];
    w->T = h[1];
    w->P = h[2];
    w->G = h[3];
    w->data = blob(f, s[0], err);
    if (s[1]) w->bitmap = (const uint8_t *)blob(f, s[1], err);
    if (s[2]) w->scales = (const uint8_t *)blob(f, s[2], err);
    if (s[3]) w->rowscale = (const uint16_t *)blob(f, s[3], err);
    if (s[4]) w->hi = blob(f, s[4], err);
    return *err;
}

static const float *read_vector(FILE *f, int expect, int *err) {
    int64_t n;
    if (rd(f, &n, sizeof n) || n != expect) {
        *err = 1;
        return NULL;
    }
    return (const float *)blob(f, n * (int64_t)sizeof(float), err);
}

int main(int argc, char **argv) {
    FILE *f = NULL;
    const int rc0 = driver_start(argc, argv, &f);
    if (rc0) return rc0;
    char magic[4];
    int32_t version, h[13];
    int err = 0;
    if (rd(f, magic, 4) || memcmp(magic, "MAQM", 4) || rd(f, &version, 4) || version != 2 || rd(f, h, sizeof h)) {
        fprintf(stderr, "%s: bad header\n", argv[2]);
        return 1;
    }
    maq_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dim = h[0];
    cfg.hidden_dim = h[1];
    cfg.n_layers = h[2];
    cfg.n_heads = h[3];
    cfg.n_kv_heads = h[4];
    cfg.head_dim = h[5];
    cfg.vocab_size = h[6];
    cfg.seq_len = h[7];
    cfg.rope_dim = h[8];
    const int max_batch = h[9], n_threads = h[10], n_tok = h[11], tied = h[12];
    if (cfg.n_layers < 1 || cfg.n_layers > 1024 || n_tok < 1 || n_tok > cfg.seq_len || cfg.rope_dim < 0) {
        fprintf(stderr, "%s: bad config\n", argv[2]);
        return 1;
    }
    if (rd(f, &cfg.norm_eps, sizeof(float))) err = 1;
    cfg.rope_inv_freq = (const float *)blob(f, (int64_t)(cfg.rope_dim / 2) * (int64_t)sizeof(float), &err);
    int32_t *tokens = (int32_t *)blob(f, (int64_t)n_tok * 4, &err);

    maq_model_weights w;
    memset(&w, 0, sizeof w);
    maq_layer_weights *layers = (maq_layer_weights *)keep(calloc((size_t)cfg.n_layers, sizeof *layers));
    if (!layers) err = 1;
    read_weight(f, &w.tok_embd, &err);
    for (int l = 0; l < cfg.n_layers && !err; l++) {
        maq_layer_weights *L = &layers[l];
        L->attn_norm = read_vector(f, cfg.dim, &err);
        read_weight(f, &L->wq, &err);
        read_weight(f, &L->wk, &err);
        read_weight(f, &L->wv, &err);
        read_weight(f, &L->wo, &err);
        L->ffn_norm = read_vector(f, cfg.dim, &err);
        read_weight(f, &L->w_gate, &err);
        read_weight(f, &L->w_up, &err);
        read_weight(f, &L->w_down, &err);
    }
    w.layers = layers;
    w.output_norm = read_vector(f, cfg.dim, &err);
    if (tied)
        w.output = w.tok_embd;
    else
        read_weight(f, &w.output, &err);
    fclose(f);
    if (err) {
        fprintf(stderr, "%s: truncated or inconsistent\n", argv[2]);
        return 1;
    }

    const size_t V = (size_t)cfg.vocab_size;
    float *prefill = (float *)keep(malloc((size_t)n_tok * V * sizeof(float)));
    float *decode = (float *)keep(malloc((size_t)n_tok * V * sizeof(float)));
    maq_model *m = maq_model_create(&cfg, &w, max_batch, n_threads);
    maq_model *m1 = maq_model_create(&cfg, &w, max_batch, n_threads);
    if (!prefill || !decode || !m || !m1) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int rc = maq_model_forward(m, tokens, n_tok, 0, prefill, 2);
    for (int i = 0; i < n_tok && !rc; i++) rc = maq_model_forward(m1, tokens + i, 1, i, decode + (size_t)i * V, 1);
    /* the argument checks of maq_model_forward (must refuse, never touch memory) */
    int32_t bad_tok = cfg.vocab_size;
    if (!rc && (maq_model_forward(m1, &bad_tok, 1, 0, decode, 1) != -2 ||
                maq_model_forward(m1, tokens, 1, cfg.seq_len, decode, 1) != -1 ||
                maq_model_forward(m1, tokens, -1, 0, decode, 1) != -3 ||
                maq_model_forward(m1, tokens, 1, 0, NULL, 1) != -3)) {
        fprintf(stderr, "maq_model_forward accepted a bad argument\n");
        rc = 1;
    }
    maq_model_free(m);
    maq_model_free(m1);
    if (rc) {
        fprintf(stderr, "maq_model_forward failed: %d\n", rc);
        return 1;
    }
    if (driver_finish(argv[3], prefill, (size_t)n_tok * V, decode, (size_t)n_tok * V)) return 1;
    for (int i = 0; i < g_nblobs; i++) free(g_blobs[i]);
    return 0;
}
