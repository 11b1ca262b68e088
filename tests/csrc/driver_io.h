/* driver_io.h -- the pieces shared by the test drivers (kernel_driver.c, model_driver.c, s8_driver.c):
 * the "PATH IN OUT" command line, the output and the filling of a maq_weight. Static inline functions, included after "maq.h". */
#ifndef MAQ_TESTS_DRIVER_IO_H
#define MAQ_TESTS_DRIVER_IO_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "maq.h"

/* Check "PROG PATH IN OUT", select kernel path PATH ("default" keeps the dispatcher's), open IN into *f.
 * Returns 0 on success, else the exit code: 1 usage or unreadable IN, 2 path not available. */
static inline int driver_start(int argc, char **argv, FILE **f) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PATH IN OUT\n", argv[0]);
        return 1;
    }
    if (strcmp(argv[1], "default") && maq_set_path(argv[1]) != 0) {
        fprintf(stderr, "path %s not available (compiled: %s)\n", argv[1], maq_compiled_paths());
        return 2;
    }
    *f = fopen(argv[2], "rb");
    if (!*f) {
        perror(argv[2]);
        return 1;
    }
    return 0;
}

/* Write float arrays a[na] then b[nb] to OUT and print "path=<active> compiled=<list>". Returns 0, or 1 (with
 * perror) if OUT cannot be written. */
static inline int driver_finish(const char *out, const float *a, size_t na, const float *b, size_t nb) {
    FILE *o = fopen(out, "wb");
    if (!o || fwrite(a, sizeof(float), na, o) != na || fwrite(b, sizeof(float), nb, o) != nb || fclose(o)) {
        perror(out);
        return 1;
    }
    printf("path=%s compiled=%s\n", maq_active_path(), maq_compiled_paths());
    return 0;
}

/* A zeroed maq_weight of `type`, T x P, group G, with its data/bitmap/scales/rowscale parts (others NULL). */
static inline maq_weight driver_weight(int type, int T, int P, int G, const void *data, const void *bitmap,
                                       const void *scales, const void *rowscale) {
    maq_weight w;
    memset(&w, 0, sizeof(w));
    w.type = type;
    w.T = T;
    w.P = P;
    w.G = G;
    w.data = data;
    w.bitmap = (const uint8_t *)bitmap;
    w.scales = (const uint8_t *)scales;
    w.rowscale = (const uint16_t *)rowscale;
    return w;
}

#endif
