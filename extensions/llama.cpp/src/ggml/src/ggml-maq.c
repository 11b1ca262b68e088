// ggml-maq.c -- MAQ2 / MAQ3 / MAQ4 for ggml-base: load-time repacking of the file's parts and to_float.
// Layouts: ggml/include/ggml-maq.h; the file format: docs/FORMAT.md of the MAQ project.
#include "ggml-maq.h"
#include "ggml-impl.h"

#include <stddef.h>
#include <string.h>

static int maq_bits(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_MAQ2: return 2;
        case GGML_TYPE_MAQ3: return 3;
        case GGML_TYPE_MAQ4: return 4;
        default:             return 0;
    }
}


int ggml_maq_repack(enum ggml_type type, int64_t T, int64_t P, int G, const void * words, const void * second,
                    const uint8_t * scales, const uint16_t * rowscale, void * dst) {
    const int bits = maq_bits(type);
    if (!bits || T <= 0 || T % QK_MAQ || (G != 32 && G != 64 && G != 128)) {
        return -1;
    }
    const int64_t nw = T / 16, nb = T / QK_MAQ, ng = (T + G - 1) / G, nbm = (T + 127) / 128;
    const size_t bsize = ggml_type_size(type);
    for (int64_t p = 0; p < P; p++) {
        const uint32_t * wr = (const uint32_t *) words + p * nw;
        const uint8_t  * sr = scales + p * 2 * ng;
        const uint16_t * rs = rowscale + p * 3;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t * blk = (uint8_t *) dst + (p * nb + b) * bsize;
            memset(blk, 0, bsize);
            ggml_maq_head * hd = (ggml_maq_head *) blk;
            hd->d = rs[0];
            hd->dmin = rs[1];
            uint8_t * qs = blk + offsetof(ggml_maq_head, qs);   // 16 bytes (MAQ2 / MAQ3) or 32 (MAQ4)
            uint8_t * qh = blk + sizeof(ggml_maq_head);         // MAQ3's bit plane follows qs
            for (int h = 0; h < 2; h++) {
                const int64_t g = (QK_MAQ * b + 32 * h) / G;   // a half never straddles a group (G >= 32)
                hd->sc[h] = sr[g];
                hd->m[h]  = (int8_t) sr[ng + g];
            }
            for (int k = 0; k < 4; k++) {   // word k of the block = inputs 16s .. 16s+15 of half h
                const int h = k / 2, s = k % 2;
                const int64_t w = p * nw + 4 * b + k;
                const uint32_t lo = wr[4 * b + k];
                if (bits == 4) {            // code of input 16s + j -> nibble s of qs[16h + j]
                    const uint32_t hw = ((const uint32_t *) second)[w];
                    for (int j = 0; j < 16; j++) {
                        const uint32_t c = ((lo >> (2 * j)) & 3) | ((hw >> (2 * j)) & 3) << 2;
                        qs[16 * h + j] |= (uint8_t) (c << (4 * s));
                    }
                    continue;
                }
                for (int n = 0; n < 8; n++) {   // inputs 16s + n, 16s + 8 + n -> bits 4s, 4s+2 of qs[8h + n]
                    qs[8 * h + n] |= (uint8_t) ((((lo >> (2 * n)) & 3) | ((lo >> (2 * n + 16)) & 3) << 2) << (4 * s));
                }
                if (bits == 3) {                // bit 2 of input 16s + j -> bit j%8 of qh[4h + 2s + j/8]
                    const uint16_t hw = ((const uint16_t *) second)[w];
                    qh[4 * h + 2 * s]     = (uint8_t) (hw & 0xff);
                    qh[4 * h + 2 * s + 1] = (uint8_t) (hw >> 8);
                }
            }
            if (bits == 2) {
                block_maq2 * x = (block_maq2 *) blk;
                x->dsal = rs[2];
                const uint8_t * bm = (const uint8_t *) second + p * nbm;
                for (int k = 0; k < 4; k++) {
                    const int64_t w = 4 * b + k;
                    if (!((bm[w / 8] >> (w % 8)) & 1)) {
                        continue;
                    }
                    const int h = k / 2, s = k % 2;
                    x->sal |= (uint8_t) (1u << k);
                    for (int n = 0; n < 8; n++) {   // clear nibble s, put the word's bits 4n..4n+3 there
                        x->qs[8 * h + n] = (uint8_t) ((x->qs[8 * h + n] & (0xF0 >> (4 * s))) |
                                                      (((wr[w] >> (4 * n)) & 15) << (4 * s)));
                    }
                }
            }
        }
    }
    return 0;
}

static void maq_dequant(const uint8_t * blk, const uint8_t * qh, int bits, float * y) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const float d = GGML_FP16_TO_FP32(hd->d), dmin = GGML_FP16_TO_FP32(hd->dmin);
    for (int h = 0; h < 2; h++) {
        const float scale = d * hd->sc[h], mn = dmin * hd->m[h];   // exact in float32 (11 x 8 bits)
        for (int i = 0; i < 32; i++) {
            y[32 * h + i] = scale * (float) ggml_maq_code(blk + offsetof(ggml_maq_head, qs), qh, bits, 32 * h + i) + mn;
        }
    }
}

void ggml_maq_dequantize_row_maq2(const block_maq2 * x, float * y, int64_t k) {
    for (int64_t b = 0; b < k / QK_MAQ; b++, y += QK_MAQ) {
        maq_dequant((const uint8_t *) &x[b], NULL, 2, y);
        if (!x[b].sal) {
            continue;
        }
        const float dsal = GGML_FP16_TO_FP32(x[b].dsal);
        for (int w = 0; w < 4; w++) {
            if ((x[b].sal >> w) & 1) {
                for (int i = 0; i < 16; i++) {
                    y[16 * w + i] = dsal * (float) ggml_maq2_mean(x[b].qs, w / 2, w % 2, i / 4);
                }
            }
        }
    }
}

void ggml_maq_dequantize_row_maq3(const block_maq3 * x, float * y, int64_t k) {
    for (int64_t b = 0; b < k / QK_MAQ; b++, y += QK_MAQ) {
        maq_dequant((const uint8_t *) &x[b], x[b].qh, 3, y);
    }
}

void ggml_maq_dequantize_row_maq4(const block_maq4 * x, float * y, int64_t k) {
    for (int64_t b = 0; b < k / QK_MAQ; b++, y += QK_MAQ) {
        maq_dequant((const uint8_t *) &x[b], NULL, 4, y);
    }
}
