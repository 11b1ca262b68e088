// maq-kernels: the extension's kernels on one MAQ tensor, for tests/extensions/test_llamacpp_maq.py.
//   maq-kernels BITS T P G DIR
// reads DIR/{words,second,scales,rowscale}.bin (the file's parts, raw) and DIR/x.f32 (T floats); writes
//   DIR/deq.f32  float [P][T]   ggml to_float of the repacked rows
//   DIR/xq.f32   float [T + T/32]  the Q8_1 activation ggml makes of x, dequantized, then its T/32 sums S
//   DIR/dot.f32  float [P][2]   vec_dot of every row with it: the build's (SIMD) path, then the scalar reference
#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-maq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ggml_vec_dot_maq_q8_1_ref(int bits, int n, float * s, const void * vx, const void * vy);

static void * slurp(const char * dir, const char * name, size_t * n) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE * f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot read %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    *n = (size_t) ftell(f);
    fseek(f, 0, SEEK_SET);
    void * p = malloc(*n ? *n : 1);
    if (fread(p, 1, *n, f) != *n) { fprintf(stderr, "short read %s\n", path); exit(1); }
    fclose(f);
    return p;
}

static void spit(const char * dir, const char * name, const void * p, size_t n) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fclose(f);
}

int main(int argc, char ** argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s BITS T P G DIR\n", argv[0]); return 2; }
    const int bits = atoi(argv[1]), G = atoi(argv[4]);
    const int64_t T = atoll(argv[2]), P = atoll(argv[3]);
    const char * dir = argv[5];
    const enum ggml_type type = bits == 2 ? GGML_TYPE_MAQ2 : bits == 3 ? GGML_TYPE_MAQ3 : GGML_TYPE_MAQ4;
    ggml_cpu_init();
    size_t n;
    void * words = slurp(dir, "words.bin", &n);
    void * second = slurp(dir, "second.bin", &n);
    uint8_t * scales = slurp(dir, "scales.bin", &n);
    uint16_t * rowscale = slurp(dir, "rowscale.bin", &n);
    float * x = slurp(dir, "x.f32", &n);
    const size_t rs = ggml_row_size(type, T);
    uint8_t * w = malloc(rs * P);
    if (ggml_maq_repack(type, T, P, G, words, second, scales, rowscale, w) != 0) { fprintf(stderr, "repack refused\n"); return 1; }
    float * deq = malloc(sizeof(float) * T * P);
    for (int64_t p = 0; p < P; p++) ggml_get_type_traits(type)->to_float(w + p * rs, deq + p * T, T);
    spit(dir, "deq.f32", deq, sizeof(float) * T * P);
    uint8_t * xq = malloc(ggml_row_size(GGML_TYPE_Q8_1, T));   // blocks of {fp16 d, fp16 s, int8 qs[32]}
    ggml_get_type_traits_cpu(GGML_TYPE_Q8_1)->from_float(x, xq, T);
    float * xd = malloc(sizeof(float) * (T + T / 32));
    for (int64_t b = 0; b < T / 32; b++) {
        const uint8_t * blk = xq + 36 * b;
        uint16_t d, s;
        memcpy(&d, blk, 2);
        memcpy(&s, blk + 2, 2);
        for (int i = 0; i < 32; i++) xd[32 * b + i] = ggml_fp16_to_fp32(d) * (float) (int8_t) blk[4 + i];
        xd[T + b] = ggml_fp16_to_fp32(s);
    }
    spit(dir, "xq.f32", xd, sizeof(float) * (T + T / 32));
    float * dot = malloc(sizeof(float) * 2 * P);
    for (int64_t p = 0; p < P; p++) {
        ggml_get_type_traits_cpu(type)->vec_dot((int) T, &dot[2 * p], 0, w + p * rs, 0, xq, 0, 1);
        ggml_vec_dot_maq_q8_1_ref(bits, (int) T, &dot[2 * p + 1], w + p * rs, xq);
    }
    spit(dir, "dot.f32", dot, sizeof(float) * 2 * P);
    return 0;
}
