// ggml-maq.h -- MAQ2 / MAQ3 / MAQ4 weight types for ggml (the MAQ project's extension, extensions/llama.cpp).
//
// A MAQ file (docs/FORMAT.md of the MAQ project) stores every quantized linear as separate GGUF parts
// (words, bitmap or hi plane, group scales, row scales) so that the stock gguf reader can list them. ggml wants
// each row to be a run of self-contained blocks, so llama.cpp's loader repacks the parts at load time into the
// blocks below (ggml_maq_repack); the file format does not change.
//
// One block covers 64 consecutive inputs of one row = two Q8_0 activation blocks ("halves" of 32 inputs).
// Values are the file's, bit for bit: w = (d*sc[h]) * q + dmin*m[h] in float32 (q = the 2/3/4-bit code), and for a
// MAQ2 salient word w = dsal * c_k (c_k = int8 mean of 4 inputs).
//
// Code layout inside a half h (inputs 32h .. 32h+31 of the block), chosen for SIMD unpacking:
//   MAQ4 qs[16h + i]: low nibble = the 4-bit code of input 32h + i, high nibble = that of input 32h + 16 + i
//   MAQ2 / MAQ3 qs[8h + i]: bits 2k..2k+1 = low 2 bits of the code of input 32h + 8k + i   (i = 0..7, k = 0..3)
//   MAQ3 qh[4h .. 4h+3]: little-endian 32-bit mask, bit i = bit 2 of the code of input 32h + i
//   MAQ2 salient word s (0/1) of half h (inputs 32h+16s .. +15): the file's 32-bit word, its bits 4n..4n+3 in
//   the nibble s of qs[8h + n]; sal bit 2h+s is set. Its 2-bit codes are not meaningful.
#ifndef GGML_MAQ_H
#define GGML_MAQ_H

#include "ggml.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QK_MAQ 64

// the header the three block types share (same offsets in each): row scales, the two halves' group codes, qs
typedef struct {
    uint16_t d, dmin;
    uint8_t  sc[2];
    int8_t   m[2];
    uint8_t  qs[16];
} ggml_maq_head;

typedef struct {
    uint16_t d, dmin;   // row scales (fp16), copied into every block of the row
    uint8_t  sc[2];     // step code of the group holding half 0 / half 1
    int8_t   m[2];      // min code of the group holding half 0 / half 1
    uint8_t  qs[16];    // 2-bit codes (or salient means), see above
    uint16_t dsal;      // salient scale (fp16)
    uint8_t  sal;       // bit 2h+s: word s of half h is salient
    uint8_t  pad;
} block_maq2;           // 28 bytes / 64 weights = 3.5 bits per weight

typedef struct {
    uint16_t d, dmin;
    uint8_t  sc[2];
    int8_t   m[2];
    uint8_t  qs[16];
    uint8_t  qh[8];     // bit 2 of every code
} block_maq3;           // 32 bytes / 64 weights = 4.0 bits per weight

typedef struct {
    uint16_t d, dmin;
    uint8_t  sc[2];
    int8_t   m[2];
    uint8_t  qs[32];    // 4-bit codes (nibbles), see above
} block_maq4;           // 40 bytes / 64 weights = 5.0 bits per weight

// file parts -> blocks. T (inputs per row) must be a multiple of 64; G in {32, 64, 128}.
//   words    uint32 [P][T/16]       the file's words (low 2 bits of every code; MAQ2 salient words: 4 int8 means)
//   second   MAQ2: uint8 bitmap [P][ceil(T/128)]; MAQ3: uint16 hi [P][T/16]; MAQ4: uint32 hi [P][T/16]
//   scales   uint8 [P][2*ceil(T/G)] sc then m;  rowscale fp16 [P][3] d, dmin, dsal
//   dst      P * T/64 blocks of the type
// Returns 0, or -1 if type / T / G are not supported.
GGML_API int ggml_maq_repack(enum ggml_type type, int64_t T, int64_t P, int G, const void * words,
                             const void * second, const uint8_t * scales, const uint16_t * rowscale, void * dst);

GGML_API void ggml_maq_dequantize_row_maq2(const block_maq2 * x, float * y, int64_t k);
GGML_API void ggml_maq_dequantize_row_maq3(const block_maq3 * x, float * y, int64_t k);
GGML_API void ggml_maq_dequantize_row_maq4(const block_maq4 * x, float * y, int64_t k);

// the 2/3/4-bit code of input i (0..63) of a block, qs = the block's code bytes (byte 8), qh = MAQ3's bit plane
// (MAQ2: meaningless inside a salient word)
static inline int ggml_maq_code(const uint8_t * qs, const uint8_t * qh, int bits, int i) {
    const int h = i / 32, r = i % 32;
    if (bits == 4) {
        return (qs[16 * h + r % 16] >> (4 * (r / 16))) & 15;
    }
    const int n = 8 * h + r % 8, sh = 2 * (r / 8);
    int q = (qs[n] >> sh) & 3;
    if (bits == 3) q |= ((qh[4 * h + r / 8] >> (r % 8)) & 1) << 2;
    return q;
}

// int8 mean k (0..3) of salient word s of half h of a MAQ2 block
static inline int ggml_maq2_mean(const uint8_t * qs, int h, int s, int k) {
    const int lo = (qs[8 * h + 2 * k] >> (4 * s)) & 15, hi = (qs[8 * h + 2 * k + 1] >> (4 * s)) & 15;
    return (int8_t) (uint8_t) (lo | (hi << 4));
}

#ifdef __cplusplus
}
#endif

#endif // GGML_MAQ_H
