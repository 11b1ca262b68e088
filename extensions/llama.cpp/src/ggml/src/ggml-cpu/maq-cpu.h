// maq-cpu.h -- CPU dot products of MAQ2 / MAQ3 / MAQ4 rows with Q8_1 activations (vec_dot_type = Q8_1).
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void ggml_vec_dot_maq2_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc);
void ggml_vec_dot_maq3_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc);
void ggml_vec_dot_maq4_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc);
// the scalar reference (every SIMD path returns bit-identical results: same integer sums, same float order)
void ggml_vec_dot_maq_q8_1_ref(int bits, int n, float * s, const void * vx, const void * vy);

#ifdef __cplusplus
}
#endif
