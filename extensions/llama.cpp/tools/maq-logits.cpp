// maq-logits: run one prompt (token ids) through a GGUF with llama.cpp and write every position's logits.
// Used by tests/extensions/test_llamacpp_maq.py to compare the patched llama.cpp with the MAQ runtime.
//   maq-logits MODEL OUT.f32 N_THREADS TOKEN [TOKEN ...]
// OUT.f32: float32 [n_tokens][n_vocab], row-major. Exit status 0 on success.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL OUT.f32 N_THREADS TOKEN [TOKEN ...]\n", argv[0]);
        return 2;
    }
    if (!getenv("MAQ_LOGITS_VERBOSE")) {
        llama_log_set(quiet, nullptr);
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    // no extra buffer types (weight repacking): on this project's CI/dev VMs the AMX one crashes in llama.cpp
    // itself (stock build, stock Q4_0 file, any prompt > 1 token); the MAQ types never use them anyway
    mp.use_extra_bufts = false;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "%s: cannot load %s\n", argv[0], argv[1]);
        return 1;
    }
    const int n = argc - 4;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n < 64 ? 64 : n;
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = cp.n_threads_batch = atoi(argv[3]);
    if (getenv("MAQ_LOGITS_F32_KV")) {   // F32 KV cache, no flash attention: only the weight products differ
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "%s: cannot create a context\n", argv[0]);
        return 1;
    }
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = atoi(argv[4 + i]);
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "%s: llama_decode failed\n", argv[0]);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    FILE * f = fopen(argv[2], "wb");
    if (!f) {
        fprintf(stderr, "%s: cannot write %s\n", argv[0], argv[2]);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, f);
    }
    fclose(f);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
