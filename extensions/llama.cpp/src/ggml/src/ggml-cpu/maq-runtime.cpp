// maq-runtime.cpp -- the CPU_MAQ buffer type: MAQ2 / MAQ3 / MAQ4 matrix products by the MAQ runtime's kernels.
//
// The default path of this extension (maq-cpu.c) multiplies ggml-native 64-input blocks with Q8_1 activations, one
// row per vec_dot call. This buffer type, an "extra" buffer of the CPU backend like AMX and CPU_REPACK, instead keeps
// each MAQ weight in the MAQ file's own layout (words, bitmap or hi plane, group codes, row scales: docs/FORMAT.md of
// the MAQ project) and runs the MAQ runtime's products on it (maq-runtime/*.c = runtime/csrc, the same source the
// MAQ runtime compiles): its activation preparation (int8 per 128 inputs, the layouts its SIMD rows read), its rows
// (SSE / AVX2 / AVX-512 VNNI / AMX tiles, NEON), bit for bit the MAQ runtime's products. One source of truth.
//
// Loading: llama.cpp's MAQ loader (src/llama-maq.cpp) repacks the file's parts into ggml blocks and hands them to
// ggml_backend_tensor_set; set_tensor below turns the blocks back into the parts (every bit of the file's words,
// codes and scales is kept in the blocks), in place in this buffer. The scale group is the largest of 128 / 64 / 32
// inputs over which every row's group codes are constant: the file's own G, or a larger one giving the same values.
// `--no-repack` (llama.cpp's use_extra_bufts = false) turns this buffer off: the weights then stay ggml blocks and
// products go through maq-cpu.c's vec_dot.
#include "maq-runtime.h"

#include "ggml-backend-impl.h"
#include "ggml-cpu-impl.h"
#include "ggml-cpu.h"
#include "ggml-impl.h"
#include "ggml-maq.h"
#include "traits.h"

#include "maq-runtime/maq.h"

#include <cstring>

namespace {

size_t pad64(size_t n) { return (n + 63) & ~size_t(63); }

bool is_maq(enum ggml_type t) { return t == GGML_TYPE_MAQ2 || t == GGML_TYPE_MAQ3 || t == GGML_TYPE_MAQ4; }

int maq_bits(enum ggml_type t) { return t == GGML_TYPE_MAQ2 ? 2 : t == GGML_TYPE_MAQ3 ? 3 : 4; }

// The runtime's type id (maq.h enum maq_type) of a MAQ ggml type.
int runtime_type(enum ggml_type t) {
    return t == GGML_TYPE_MAQ2 ? MAQ_TYPE_MAQ2 : t == GGML_TYPE_MAQ3 ? MAQ_TYPE_MAQ3 : MAQ_TYPE_MAQ4;
}

// Where each part of a P x T weight lies inside its tensor's allocation (offsets from tensor->data):
//   [0]        maq_weight (the runtime's descriptor, its pointers into this allocation)
//   words      uint32 [P][T/16]
//   second     MAQ2: uint8 bitmap [P][ceil(T/128)]; MAQ3: uint16 hi [P][T/16]; MAQ4: uint32 hi [P][T/16]
//   scales     uint8 [P][2*ceil(T/G)] (sized for G = 32, the most groups)
//   rowscale   fp16 [P][3]: d, dmin, dsal
//   r16        MAQ3 / MAQ4 where the CPU has AVX-512 VNNI + GFNI: the runtime's 16-row panels (maq_r16_pack, sized for
//              G = 32, the most groups), which its products read instead of the parts above; else empty
// every part starts on a 64-byte boundary.
struct parts_layout {
    size_t words, second, scales, rowscale, r16, total;
};

parts_layout layout_of(enum ggml_type type, int64_t T, int64_t P) {
    const int64_t nw = T / 16;
    const size_t second = type == GGML_TYPE_MAQ2 ? (size_t) (P * ((T + 127) / 128))
                        : (size_t) (P * nw) * (type == GGML_TYPE_MAQ3 ? 2 : 4);
    parts_layout L;
    L.words    = pad64(sizeof(maq_weight));
    L.second   = L.words + pad64((size_t) (P * nw) * 4);
    L.scales   = L.second + pad64(second);
    L.rowscale = L.scales + pad64((size_t) (P * 2 * ((T + 31) / 32)));
    L.r16      = L.rowscale + pad64((size_t) P * 3 * sizeof(uint16_t));
    maq_weight most = maq_weight{};   // the panels' bytes at G = 32 (MAQ2: 0, a descriptor without its bitmap)
    most.type = runtime_type(type);
    most.T    = (int) T;
    most.P    = (int) P;
    most.G    = 32;
    L.total   = L.r16 + maq_r16_bytes(&most);
    return L;
}

// The runtime's descriptor of a weight whose parts are not there yet (all the activation sizing needs).
maq_weight shape_only(const ggml_tensor * w) {
    maq_weight d;
    memset(&d, 0, sizeof(d));
    d.type = runtime_type(w->type);
    d.T = (int) w->ne[0];
    d.P = (int) w->ne[1];
    return d;
}

// Group codes (sc, m) of half k (32 inputs) of row p of the blocks.
const ggml_maq_head * half_head(const uint8_t * blocks, size_t bsize, int64_t nb, int64_t p, int64_t k, int * h) {
    *h = (int) (k % 2);
    return (const ggml_maq_head *) (blocks + (size_t) (p * nb + k / 2) * bsize);
}

// The largest scale group (128, 64, 32 inputs) whose (sc, m) codes are the same for all its halves in every row.
int scale_group(const uint8_t * blocks, size_t bsize, int64_t nb, int64_t P) {
    for (int G : {128, 64}) {
        const int64_t hpg = G / 32;   // halves per group
        bool same = true;
        for (int64_t p = 0; p < P && same; p++) {
            for (int64_t k = 0; k < 2 * nb && same; k++) {
                int h, h0;
                const ggml_maq_head * a = half_head(blocks, bsize, nb, p, k, &h);
                const ggml_maq_head * b = half_head(blocks, bsize, nb, p, k - k % hpg, &h0);
                same = a->sc[h] == b->sc[h0] && a->m[h] == b->m[h0];
            }
        }
        if (same) {
            return G;
        }
    }
    return 32;
}

// ggml blocks (ggml-maq.h, P rows of T/64 blocks) -> the runtime's parts at dst (layout_of), descriptor included.
void blocks_to_parts(enum ggml_type type, int64_t T, int64_t P, const uint8_t * blocks, uint8_t * dst) {
    const parts_layout L = layout_of(type, T, P);
    const int bits = maq_bits(type);
    const size_t bsize = ggml_type_size(type);
    const int64_t nb = T / QK_MAQ, nw = T / 16, nbm = (T + 127) / 128;
    const int G = scale_group(blocks, bsize, nb, P);
    const int64_t ng = (T + G - 1) / G;
    memset(dst, 0, L.total);
    uint32_t * words    = (uint32_t *) (dst + L.words);
    uint8_t  * second   = dst + L.second;
    uint8_t  * scales   = dst + L.scales;
    uint16_t * rowscale = (uint16_t *) (dst + L.rowscale);
    for (int64_t p = 0; p < P; p++) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t * blk = blocks + (size_t) (p * nb + b) * bsize;
            const ggml_maq_head * hd = (const ggml_maq_head *) blk;
            const uint8_t * qs = blk + offsetof(ggml_maq_head, qs);
            const uint8_t * qh = blk + sizeof(ggml_maq_head);   // MAQ3's bit plane
            rowscale[3 * p + 0] = hd->d;
            rowscale[3 * p + 1] = hd->dmin;
            for (int h = 0; h < 2; h++) {
                const int64_t g = (QK_MAQ * b + 32 * h) / G;
                scales[p * 2 * ng + g]      = hd->sc[h];
                scales[p * 2 * ng + ng + g] = (uint8_t) hd->m[h];
            }
            for (int k = 0; k < 4; k++) {   // word k of the block: inputs 16k + j = half h, inputs 16s + j
                const int h = k / 2, s = k % 2;
                const int64_t w = p * nw + 4 * b + k;
                uint32_t lo = 0, hi = 0;
                if (bits == 4) {            // code of input 16s + j of half h: nibble s of qs[16h + j]
                    for (int j = 0; j < 16; j++) {
                        const uint32_t c = (uint32_t) (qs[16 * h + j] >> (4 * s)) & 15;
                        lo |= (c & 3) << (2 * j);
                        hi |= (c >> 2) << (2 * j);
                    }
                    ((uint32_t *) second)[w] = hi;
                } else {                    // input 16s + j: bits 2(2s + j/8) of qs[8h + j%8]
                    for (int n = 0; n < 8; n++) {
                        const uint32_t v = (uint32_t) qs[8 * h + n] >> (4 * s);
                        lo |= (v & 3) << (2 * n) | ((v >> 2) & 3) << (2 * n + 16);
                    }
                    if (bits == 3) {        // bit 2 of input 16s + j: bit j%8 of qh[4h + 2s + j/8]
                        ((uint16_t *) second)[w] = (uint16_t) (qh[4 * h + 2 * s] | qh[4 * h + 2 * s + 1] << 8);
                    }
                }
                words[w] = lo;
            }
            if (bits == 2) {
                const block_maq2 * x = (const block_maq2 *) blk;
                rowscale[3 * p + 2] = x->dsal;
                for (int k = 0; k < 4; k++) {   // salient word k of the block: its 32 bits from nibble s of 8 bytes
                    if (!((x->sal >> k) & 1)) {
                        continue;
                    }
                    const int h = k / 2, s = k % 2;
                    const int64_t w = 4 * b + k;
                    uint32_t word = 0;
                    for (int n = 0; n < 8; n++) {
                        word |= (uint32_t) ((x->qs[8 * h + n] >> (4 * s)) & 15) << (4 * n);
                    }
                    words[p * nw + w] = word;
                    second[p * nbm + w / 8] |= (uint8_t) (1u << (w % 8));
                }
            }
        }
    }
    maq_weight * d = (maq_weight *) dst;
    *d = maq_weight{};
    d->type     = runtime_type(type);
    d->T        = (int) T;
    d->P        = (int) P;
    d->G        = G;
    d->data     = words;
    d->bitmap   = bits == 2 ? second : nullptr;
    d->hi       = bits == 2 ? nullptr : second;
    d->scales   = scales;
    d->rowscale = rowscale;
    const size_t r16 = maq_r16_bytes(d);
    if (r16 > 0 && r16 <= L.total - L.r16) {   // sized at G = 32: always fits
        maq_r16_pack(d, dst + L.r16);
        d->r16 = dst + L.r16;
    }
}

// Bytes of float32 rows needed to gather a non-contiguous src1 (0 when it is contiguous).
size_t gather_bytes(const ggml_tensor * src1) {
    return ggml_is_contiguous(src1) ? 0 : pad64((size_t) ggml_nelements(src1) * sizeof(float));
}

// The rows of a strided src1 into X [B][T] (each row's T elements are contiguous: supports_op asks for nb0 = 4).
void gather_rows(const ggml_tensor * src1, int T, float * X) {
    for (int64_t i3 = 0; i3 < src1->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < src1->ne[2]; i2++) {
            for (int64_t i1 = 0; i1 < src1->ne[1]; i1++, X += T) {
                memcpy(X, (const char *) src1->data + i1 * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3],
                       (size_t) T * sizeof(float));
            }
        }
    }
}

// Activation scratch of one product: B > 1 shares one prepared activation (thread 0 prepares it, a barrier), a single
// token gets one copy per thread (each thread prepares its own: T values, cheaper than a barrier).
size_t act_slot_bytes(const ggml_tensor * op) {
    const maq_weight w = shape_only(op->src[0]);
    return pad64(maq_act_bytes(&w, (int) ggml_nrows(op->src[1])));
}

// dst rows = the rows of the MAQ matrix src0 [T, P] that the I32 ids src1 [ne10, ne11, ne12] name (a MAQ token_embd,
// --embed-type maq4, whose tied output head is a product of the same tensor), dequantized by the runtime's get_row
// (format.dequantize's values); threads take every nth id.
void get_rows(const ggml_compute_params * params, ggml_tensor * op) {
    const ggml_tensor * ids = op->src[1];
    const maq_weight * w = (const maq_weight *) op->src[0]->data;
    const int64_t n = ggml_nelements(ids);
    for (int64_t i = params->ith; i < n; i += params->nth) {
        const int64_t i10 = i % ids->ne[0], i11 = i / ids->ne[0] % ids->ne[1], i12 = i / (ids->ne[0] * ids->ne[1]);
        const int32_t p = *(const int32_t *) ((const char *) ids->data + i10 * ids->nb[0] + i11 * ids->nb[1] +
                                              i12 * ids->nb[2]);
        GGML_ASSERT(p >= 0 && p < w->P);
        maq_get_row(w, p, (float *) ((char *) op->data + i10 * op->nb[1] + i11 * op->nb[2] + i12 * op->nb[3]));
    }
}

class tensor_traits : public ggml::cpu::tensor_traits {
    bool work_size(int n_threads, const ggml_tensor * op, size_t & size) override {
        if (op->op == GGML_OP_GET_ROWS) {
            size = 0;
            return true;
        }
        const int slots = ggml_nrows(op->src[1]) == 1 ? n_threads : 1;
        size = gather_bytes(op->src[1]) + (size_t) slots * act_slot_bytes(op);
        return true;
    }

    // dst [P, B] = W x for the B = ne11*ne12*ne13 rows of src1 (the MAQ runtime's activation layout and rows), every
    // thread computing its share of the output rows.
    bool compute_forward(ggml_compute_params * params, ggml_tensor * op) override {
        if (op->op == GGML_OP_GET_ROWS) {
            get_rows(params, op);
            return true;
        }
        if (op->op != GGML_OP_MUL_MAT) {
            return false;
        }
        const ggml_tensor * src1 = op->src[1];
        const maq_weight * w = (const maq_weight *) op->src[0]->data;
        const int B = (int) ggml_nrows(src1);
        const size_t gb = gather_bytes(src1);
        const float * X = gb ? (const float *) params->wdata : (const float *) src1->data;
        uint8_t * act = (uint8_t *) params->wdata + gb;
        if (B == 1 && !gb) {
            act += (size_t) params->ith * act_slot_bytes(op);
            maq_act_prepare(w, X, 1, act);
        } else {
            if (params->ith == 0) {
                if (gb) {
                    gather_rows(src1, w->T, (float *) params->wdata);
                }
                maq_act_prepare(w, X, B, act);
            }
            ggml_barrier(params->threadpool);
        }
        maq_matmul_act_part(w, act, B, (float *) op->data, params->ith, params->nth);
        return true;
    }
};

tensor_traits traits;

class extra_buffer_type : public ggml::cpu::extra_buffer_type {
    bool supports_op(ggml_backend_dev_t, const ggml_tensor * op) override {
        const ggml_tensor * src0 = op->src[0];
        const ggml_tensor * src1 = op->src[1];
        const bool here = src0 && src0->buffer && src0->buffer->buft == ggml_backend_cpu_maq_buffer_type() &&
                          is_maq(src0->type) && ggml_n_dims(src0) == 2 &&
                          (!src1->buffer || ggml_backend_buft_is_host(src1->buffer->buft));
        if (op->op == GGML_OP_GET_ROWS) {
            return here && src1->type == GGML_TYPE_I32 && op->type == GGML_TYPE_F32 && op->nb[0] == sizeof(float);
        }
        return op->op == GGML_OP_MUL_MAT && here && src1->type == GGML_TYPE_F32 && src1->nb[0] == sizeof(float) &&
               ggml_is_contiguous(op);
    }

    ggml::cpu::tensor_traits * get_tensor_traits(const ggml_tensor * op) override {
        if ((op->op == GGML_OP_MUL_MAT || op->op == GGML_OP_GET_ROWS) && op->src[0]->buffer &&
            op->src[0]->buffer->buft == ggml_backend_cpu_maq_buffer_type()) {
            return (ggml::cpu::tensor_traits *) op->src[0]->extra;
        }
        return nullptr;
    }
};

}  // namespace

static enum ggml_status maq_buffer_init_tensor(ggml_backend_buffer_t, ggml_tensor * tensor) {
    tensor->extra = (void *) &traits;
    return GGML_STATUS_SUCCESS;
}

// The loader hands over the whole tensor as ggml blocks (ggml-maq.h); they become the runtime's parts in place.
static void maq_buffer_set_tensor(ggml_backend_buffer_t, ggml_tensor * tensor, const void * data, size_t offset,
                                  size_t size) {
    GGML_ASSERT(is_maq(tensor->type));
    GGML_ASSERT(offset == 0 && size == ggml_nbytes(tensor));
    blocks_to_parts(tensor->type, tensor->ne[0], tensor->ne[1], (const uint8_t *) data, (uint8_t *) tensor->data);
}

static const char * maq_buffer_type_get_name(ggml_backend_buffer_type_t) { return "CPU_MAQ"; }

static ggml_backend_buffer_t maq_buffer_type_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    ggml_backend_buffer_t buffer = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), size);
    if (buffer == nullptr) {
        return nullptr;
    }
    buffer->buft              = buft;
    buffer->iface.init_tensor = maq_buffer_init_tensor;
    buffer->iface.set_tensor  = maq_buffer_set_tensor;
    buffer->iface.get_tensor  = nullptr;   // the parts are not ggml blocks: nothing reads them back as such
    buffer->iface.cpy_tensor  = nullptr;
    return buffer;
}

static size_t maq_buffer_type_get_alignment(ggml_backend_buffer_type_t) { return 64; }

static size_t maq_buffer_type_get_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor * tensor) {
    return is_maq(tensor->type) ? layout_of(tensor->type, tensor->ne[0], tensor->ne[1]).total : ggml_nbytes(tensor);
}

ggml_backend_buffer_type_t ggml_backend_cpu_maq_buffer_type(void) {
    static ggml_backend_buffer_type buft = {
        /* .iface    = */ {
            /* .get_name       = */ maq_buffer_type_get_name,
            /* .alloc_buffer   = */ maq_buffer_type_alloc_buffer,
            /* .get_alignment  = */ maq_buffer_type_get_alignment,
            /* .get_max_size   = */ nullptr,
            /* .get_alloc_size = */ maq_buffer_type_get_alloc_size,
            /* .is_host        = */ nullptr,
        },
        /* .device  = */ ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0),
        /* .context = */ new extra_buffer_type(),
    };
    return &buft;
}
