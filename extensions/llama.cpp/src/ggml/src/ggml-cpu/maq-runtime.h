// maq-runtime.h -- the CPU_MAQ buffer type: MAQ2 / MAQ3 / MAQ4 matrix products by the MAQ runtime's own kernels.
#pragma once

#include "ggml-backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// An extra buffer type of the CPU backend (as AMX and CPU_REPACK): the loader puts the MAQ weights of matrix products
// here; they are held in the MAQ file's own layout and multiplied by the MAQ runtime (maq-runtime/, compiled from the
// MAQ project's runtime/csrc).
ggml_backend_buffer_type_t ggml_backend_cpu_maq_buffer_type(void);

#ifdef __cplusplus
}
#endif
