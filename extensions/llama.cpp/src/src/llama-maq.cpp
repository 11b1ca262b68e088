// llama-maq.cpp -- load MAQ2 / MAQ3 / MAQ4 weights (the MAQ project's files, docs/FORMAT.md there).
//
// A MAQ GGUF stores each quantized linear <name> as parts: <name> (I32 words, ne = [T/16, P]), <name>.bitmap
// (MAQ2, I8 [ceil(T/128), P]) or <name>.hi (MAQ3: I16 [T/16, P], MAQ4: I32 [T/16, P]), <name>.scales
// (I8 [2*ceil(T/G), P]) and <name>.rowscale (F16 [3, P]), described by maq.tensor.<name>.type ("maq2" / "maq3" /
// "maq4") and maq.tensor.<name>.group_size (G). maq_prepare() turns the four parts into one logical tensor of
// type GGML_TYPE_MAQ* and shape [T, P] (what the model's create_tensor() expects) and drops the other parts from
// the weight map; maq_load() reads the parts and repacks them (ggml_maq_repack) into the tensor's buffer.
// MAQ weights cannot be memory-mapped (their bytes change), so a file with MAQ tensors loads without mmap.
#include "llama-model-loader.h"
#include "llama-impl.h"

#include "ggml-maq.h"

#include <chrono>
#include <cmath>
#include <cstring>

static const char * const MAQ_KEY_PREFIX = "maq.tensor.";
static const char * const MAQ_KEY_TYPE   = ".type";
static const char * const MAQ_KEY_GROUP  = ".group_size";
static const char * const MAQ_KEY_CODING = ".salient_coding";   // runtime/format.py key_salient_coding
static const char * const MAQ_CODING_MEAN4 = "mean4";           // runtime/format.py SALIENT_MEAN4, the only one read

// bytes of part k in the file (the words' meta tensor has become the logical MAQ tensor: its size is recomputed)
static size_t maq_part_bytes(const llama_model_loader::maq_tensor & mt, size_t k) {
    return k == 0 ? (size_t) (mt.T / 16) * sizeof(uint32_t) * (size_t) mt.P : ggml_nbytes(mt.parts[k].tensor);
}

void llama_model_loader::maq_prepare() {
    if (metadata == nullptr) {
        return;
    }
    // linears stored rotated along their inputs (MAQ's --incoherence, docs/FORMAT.md section 10): this extension
    // does not rotate activations, so such a file would compute garbage; refuse it
    const int64_t ki = gguf_find_key(metadata, "maq.incoherence");
    if (ki >= 0 && (gguf_get_kv_type(metadata, ki) != GGUF_TYPE_STRING ||
                    std::string(gguf_get_val_str(metadata, ki)) != "none")) {
        throw std::runtime_error("MAQ: metadata maq.incoherence: this file's linears are stored rotated (converted "
                                 "with --incoherence); the llama.cpp MAQ extension does not rotate activations: "
                                 "run it with MAQ's runtime, or convert without --incoherence");
    }
    const int64_t n = gguf_get_n_kv(metadata);
    const size_t  lp = strlen(MAQ_KEY_PREFIX), ls = strlen(MAQ_KEY_TYPE);
    for (int64_t i = 0; i < n; i++) {
        const std::string key = gguf_get_key(metadata, i);
        if (key.size() <= lp + ls || key.compare(0, lp, MAQ_KEY_PREFIX) != 0 ||
            key.compare(key.size() - ls, ls, MAQ_KEY_TYPE) != 0) {
            continue;
        }
        const std::string name = key.substr(lp, key.size() - lp - ls);
        if (gguf_get_kv_type(metadata, i) != GGUF_TYPE_STRING) {
            throw std::runtime_error(format("MAQ: metadata %s is not a string", key.c_str()));
        }
        const std::string tname = gguf_get_val_str(metadata, i);
        const int bits = tname == "maq2" ? 2 : tname == "maq3" ? 3 : tname == "maq4" ? 4 : 0;
        if (!bits) {
            throw std::runtime_error(format("MAQ: metadata %s = '%s', expected maq2, maq3 or maq4", key.c_str(), tname.c_str()));
        }
        const std::string gkey = std::string(MAQ_KEY_PREFIX) + name + MAQ_KEY_GROUP;
        const int64_t gi = gguf_find_key(metadata, gkey.c_str());
        if (gi < 0 || gguf_get_kv_type(metadata, gi) != GGUF_TYPE_UINT32) {
            throw std::runtime_error(format("MAQ: tensor '%s': metadata %s missing or not a u32", name.c_str(), gkey.c_str()));
        }
        const int G = (int) gguf_get_val_u32(metadata, gi);
        // salient words kept as int8 codes in an overflow area (MAQ's --salient-coding int8, docs/FORMAT.md section 9)
        // are not read by this extension: refuse the file rather than run it with that area ignored
        const std::string ckey = std::string(MAQ_KEY_PREFIX) + name + MAQ_KEY_CODING;
        const int64_t ci = gguf_find_key(metadata, ckey.c_str());
        if (ci >= 0 && (gguf_get_kv_type(metadata, ci) != GGUF_TYPE_STRING ||
                        std::string(gguf_get_val_str(metadata, ci)) != MAQ_CODING_MEAN4)) {
            throw std::runtime_error(format("MAQ: tensor '%s': metadata %s is not 'mean4': the llama.cpp MAQ extension "
                                            "reads mean4 salient words only (a file converted with --salient-coding "
                                            "int8 runs with MAQ's runtime)", name.c_str(), ckey.c_str()));
        }

        // the parts, in file order, with the GGUF type each must have
        const std::vector<std::pair<std::string, ggml_type>> want = {
            {name,                                        GGML_TYPE_I32},
            {name + (bits == 2 ? ".bitmap" : ".hi"),      bits == 2 ? GGML_TYPE_I8 : bits == 3 ? GGML_TYPE_I16 : GGML_TYPE_I32},
            {name + ".scales",                            GGML_TYPE_I8},
            {name + ".rowscale",                          GGML_TYPE_F16},
        };
        maq_tensor mt;
        mt.bits = bits;
        mt.G = G;
        for (const auto & [pname, ptype] : want) {
            const auto it = weights_map.find(pname);
            if (it == weights_map.end()) {
                throw std::runtime_error(format("MAQ: tensor '%s' (%s): part '%s' is missing", name.c_str(), tname.c_str(), pname.c_str()));
            }
            const ggml_tensor * t = it->second.tensor;
            if (t->type != ptype || ggml_n_dims(t) > 2) {
                throw std::runtime_error(format("MAQ: part '%s' is %s with %d dims, expected 2-D %s", pname.c_str(),
                    ggml_type_name(t->type), ggml_n_dims(t), ggml_type_name(ptype)));
            }
            mt.parts.push_back(it->second);
        }
        const ggml_tensor * w = mt.parts[0].tensor;
        mt.T = 16 * w->ne[0];
        mt.P = w->ne[1];
        const int64_t ng = (mt.T + G - 1) / G;
        const int64_t ne0[4] = {w->ne[0], bits == 2 ? (mt.T + 127) / 128 : w->ne[0], 2 * ng, 3};
        for (int k = 0; k < 4; k++) {
            const ggml_tensor * t = mt.parts[k].tensor;
            if (t->ne[0] != ne0[k] || t->ne[1] != mt.P) {
                throw std::runtime_error(format("MAQ: part '%s' has ne = [%lld, %lld], expected [%lld, %lld]",
                    ggml_get_name(t), (long long) t->ne[0], (long long) t->ne[1], (long long) ne0[k], (long long) mt.P));
            }
        }
        if (mt.T % QK_MAQ != 0 || (G != 32 && G != 64 && G != 128)) {
            throw std::runtime_error(format("MAQ: tensor '%s': T = %lld inputs, G = %d; this llama.cpp extension needs "
                "T a multiple of %d and G in {32, 64, 128}", name.c_str(), (long long) mt.T, G, QK_MAQ));
        }

        // count the logical tensor instead of its parts, drop the non-word parts from the weight map
        for (size_t k = 0; k < mt.parts.size(); k++) {
            n_elements -= ggml_nelements(mt.parts[k].tensor);
            if (k > 0) {
                weights_map.erase(ggml_get_name(mt.parts[k].tensor));
            }
        }
        n_elements += mt.T * mt.P;

        // the words' meta tensor becomes the logical MAQ tensor [T, P]
        ggml_tensor * cur = weights_map.at(name).tensor;
        const ggml_type type = bits == 2 ? GGML_TYPE_MAQ2 : bits == 3 ? GGML_TYPE_MAQ3 : GGML_TYPE_MAQ4;
        cur->type  = type;
        cur->ne[0] = mt.T;
        cur->nb[0] = ggml_type_size(type);
        cur->nb[1] = ggml_row_size(type, mt.T);
        for (int d = 2; d < GGML_MAX_DIMS; d++) {
            cur->nb[d] = cur->nb[d - 1] * cur->ne[d - 1];
        }
        maq_tensors.emplace(name, std::move(mt));
    }
    if (!maq_tensors.empty()) {
        LLAMA_LOG_INFO("%s: %zu MAQ tensors (repacked at load time into ggml blocks; mmap is off for this model)\n",
            __func__, maq_tensors.size());
        use_mmap = false;
    }
}

bool llama_model_loader::maq_load(ggml_tensor * cur) {
    const auto it = maq_tensors.find(ggml_get_name(cur));
    if (it == maq_tensors.end()) {
        return false;
    }
    const maq_tensor & mt = it->second;
    const auto t0 = std::chrono::steady_clock::now();
    // the parts and the staging blocks reuse the loader's buffers from tensor to tensor (no allocation per tensor)
    std::vector<std::vector<uint8_t>> & parts = maq_parts;
    parts.resize(mt.parts.size());
    for (size_t k = 0; k < mt.parts.size(); k++) {
        const llama_tensor_weight & w = mt.parts[k];
        parts[k].resize(maq_part_bytes(mt, k));
        const auto & file = files.at(w.idx);
        file->seek(w.offs, SEEK_SET);
        file->read_raw(parts[k].data(), parts[k].size());
    }
    const uint16_t * rs = (const uint16_t *) parts[3].data();
    for (int64_t i = 0; i < 3 * mt.P; i++) {
        if (!std::isfinite(ggml_fp16_to_fp32(rs[i]))) {
            throw std::runtime_error(format("MAQ: tensor '%s': row %lld has a non-finite row scale",
                ggml_get_name(cur), (long long) (i / 3)));
        }
    }
    const size_t n_size = ggml_nbytes(cur);
    const bool host = cur->buffer && ggml_backend_buffer_is_host(cur->buffer);
    if (!host && maq_staging.size() < n_size) {
        maq_staging.resize(n_size);
    }
    void * dst = host ? cur->data : maq_staging.data();
    if (ggml_maq_repack(cur->type, mt.T, mt.P, mt.G, parts[0].data(), parts[1].data(), parts[2].data(), rs, dst) != 0) {
        throw std::runtime_error(format("MAQ: tensor '%s': cannot repack", ggml_get_name(cur)));
    }
    if (!host) {
        ggml_backend_tensor_set(cur, dst, 0, n_size);
    }
    maq_repack_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    // what the tensor takes in its buffer: ggml blocks in a plain one, the file's parts in CPU_MAQ (its set_tensor
    // turned the blocks back into them)
    maq_mem_bytes += cur->buffer ? ggml_backend_buft_get_alloc_size(ggml_backend_buffer_get_type(cur->buffer), cur) : n_size;
    if (++maq_n_loaded == maq_tensors.size()) {
        maq_staging = {};
        maq_parts = {};
        size_t file_bytes = 0;
        for (const auto & [name, t] : maq_tensors) {
            for (size_t k = 0; k < t.parts.size(); k++) {
                file_bytes += maq_part_bytes(t, k);
            }
        }
        LLAMA_LOG_INFO("%s: MAQ: read and repacked %zu tensors in %.1f ms: %.2f MiB in the file -> %.2f MiB in memory\n",
            __func__, maq_n_loaded, maq_repack_us / 1000.0, file_bytes / 1048576.0, maq_mem_bytes / 1048576.0);
    }
    return true;
}
