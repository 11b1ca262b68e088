// maq-logits: run one prompt (token ids) through a GGUF with llama.cpp and write every position's logits.
// Used by tests/extensions/test_llamacpp_maq.py to compare the patched llama.cpp with the MAQ runtime.
//   maq-logits MODEL OUT.f32 N_THREADS TOKEN [TOKEN ...]
// OUT.f32: float32 [n_tokens][n_vocab], row-major. Exit status 0 on success.
#include "ggml-backend.h"
#include "gguf.h"
#include "llama.h"

#include <cstring>
#include <string>

#include <cstdio>
#include <cstdlib>
#include <vector>

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

// The CPU backend's extra buffer type called name, or nullptr.
static ggml_backend_buffer_type_t find_extra_buft(const char * name) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    for (ggml_backend_buffer_type_t * b = get_extra ? get_extra(cpu) : nullptr; b && *b; b++) {
        if (strcmp(ggml_backend_buft_name(*b), name) == 0) {
            return *b;
        }
    }
    return nullptr;
}

// "^name$" (dots escaped) for every MAQ tensor of the file (metadata maq.tensor.<name>.type).
static std::vector<std::string> maq_tensor_patterns(const char * path) {
    std::vector<std::string> out;
    gguf_init_params gp = {/* .no_alloc = */ true, /* .ctx = */ nullptr};
    gguf_context * g = gguf_init_from_file(path, gp);
    if (!g) {
        return out;
    }
    const std::string pre = "maq.tensor.", suf = ".type";
    for (int64_t i = 0; i < gguf_get_n_kv(g); i++) {
        const std::string key = gguf_get_key(g, i);
        if (key.size() > pre.size() + suf.size() && key.compare(0, pre.size(), pre) == 0 &&
            key.compare(key.size() - suf.size(), suf.size(), suf) == 0) {
            std::string p = "^";
            for (char c : key.substr(pre.size(), key.size() - pre.size() - suf.size())) {
                p += c == '.' ? std::string("\\.") : std::string(1, c);
            }
            out.push_back(p + "$");
        }
    }
    gguf_free(g);
    return out;
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
    // no extra buffer types for the other weights (on this project's CI/dev VMs the AMX one crashes in llama.cpp
    // itself: stock build, stock Q4_0 / Q8_0 weights, any prompt > 1 token; and they would change the Q8_0 products)
    mp.use_extra_bufts = false;
    // MAQ_LOGITS_EXTRA_BUFTS=1: the MAQ weights in the CPU_MAQ buffer type (what llama.cpp picks by default: products
    // by the MAQ runtime's kernels); else they stay ggml blocks in the CPU buffer (products by maq-cpu.c's vec_dot)
    const char * eb = getenv("MAQ_LOGITS_EXTRA_BUFTS");
    std::vector<std::string> patterns;
    std::vector<llama_model_tensor_buft_override> overrides;
    if (eb && atoi(eb) != 0) {
        ggml_backend_buffer_type_t cpu_maq = find_extra_buft("CPU_MAQ");
        patterns = maq_tensor_patterns(argv[1]);
        if (!cpu_maq || patterns.empty()) {
            fprintf(stderr, "%s: %s\n", argv[0], !cpu_maq ? "no CPU_MAQ buffer type in this build" : "no MAQ tensors");
            return 1;
        }
        for (const std::string & p : patterns) {
            overrides.push_back({p.c_str(), cpu_maq});
        }
        overrides.push_back({nullptr, nullptr});
        mp.tensor_buft_overrides = overrides.data();
    }
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
