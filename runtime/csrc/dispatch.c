/* dispatch.c -- SIMD path selection.
 *
 * Paths compiled in: "scalar" always; on x86-64 "sse" (SSSE3 + SSE4.1) and "avx2" built with
 * __attribute__((target(...))) so the baseline build stays plain x86-64, chosen at run time with
 * __builtin_cpu_supports; on aarch64 "neon" (baseline there) and "dotprod" (NEON + SDOT, ARMv8.2, chosen
 * when the kernel's HWCAP says the CPU has it); on x86-64 also "vnni" (AVX2 + AVX-512 VNNI/VL/BW: vpdpbusd on
 * 256-bit registers), chosen when the CPU (and OS) supports AVX-512; "amx" (the vnni path plus AMX int8 tiles for
 * batched MAQ2/MAQ3/MAQ4 products) when the CPU has AMX-TILE and AMX-INT8 and Linux grants the process the tile data
 * state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16; asked once, here).
 * The default is the widest supported path unless MAQ_FORCE_PATH names another (read once, at first use).
 */
#ifndef _GNU_SOURCE       /* (a build may define it already: llama.cpp's) */
#define _GNU_SOURCE   /* syscall() */
#endif
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maq_internal.h"

#if defined(MAQ_NEON) && defined(__linux__)
#include <sys/auxv.h>
#define MAQ_HWCAP_ASIMDDP (1ul << 20)   /* HWCAP_ASIMDDP: SDOT/UDOT (ARMv8.2 dot product) */
#endif

#if defined(MAQ_X86) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MAQ_ARCH_REQ_XCOMP_PERM 0x1023   /* arch/x86/include/uapi/asm/prctl.h */
#define MAQ_XFEATURE_XTILEDATA 18
/* AMX-TILE (CPUID.7.0:EDX[24]) and AMX-INT8 (EDX[25]), and the kernel lets this process use the tile data. */
static int amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d >> 24 & 1u) || !(d >> 25 & 1u)) return 0;
    return syscall(SYS_arch_prctl, MAQ_ARCH_REQ_XCOMP_PERM, MAQ_XFEATURE_XTILEDATA) == 0;
}
#endif

static const char *const PATH_NAMES[MAQ_N_PATHS] = {"scalar", "sse", "avx2", "neon", "dotprod", "vnni", "amx"};
#define N_PATHS MAQ_N_PATHS

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static atomic_int g_path = MAQ_PATH_SCALAR;
static int g_supported[N_PATHS];
static int g_gfni;   /* x86-64: GFNI present and not turned off by MAQ_NO_GFNI (see maq_cpu_gfni) */
static char g_supported_str[64];

static void detect(void) {
    g_supported[MAQ_PATH_SCALAR] = 1;
#if defined(MAQ_X86)
    __builtin_cpu_init();
    g_supported[MAQ_PATH_SSE] = __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("sse4.1");
    g_supported[MAQ_PATH_AVX2] = g_supported[MAQ_PATH_SSE] && __builtin_cpu_supports("avx2") &&
                                 __builtin_cpu_supports("f16c");
    g_supported[MAQ_PATH_VNNI] = g_supported[MAQ_PATH_AVX2] && __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                                 __builtin_cpu_supports("avx512vnni");
#if defined(__linux__)
    g_supported[MAQ_PATH_AMX] = g_supported[MAQ_PATH_VNNI] && __builtin_cpu_supports("avx512dq") && amx_usable();
#endif
    const char *no_gfni = getenv("MAQ_NO_GFNI");
    g_gfni = __builtin_cpu_supports("gfni") && !(no_gfni && no_gfni[0] && strcmp(no_gfni, "0"));
#endif
#if defined(MAQ_NEON)
    g_supported[MAQ_PATH_NEON] = 1;
#if defined(__linux__)
    g_supported[MAQ_PATH_DOTPROD] = (getauxval(AT_HWCAP) & MAQ_HWCAP_ASIMDDP) != 0;
#endif
#endif
    g_supported_str[0] = 0;
    int best = MAQ_PATH_SCALAR;
    for (int i = 0; i < N_PATHS; i++) {
        if (!g_supported[i]) continue;
        if (g_supported_str[0]) strcat(g_supported_str, ",");
        strcat(g_supported_str, PATH_NAMES[i]);
        best = i;   /* the list is ordered narrow -> wide within each ISA */
    }
    const char *force = getenv("MAQ_FORCE_PATH");
    if (force && force[0]) {
        int found = -1;
        for (int i = 0; i < N_PATHS; i++)
            if (!strcmp(force, PATH_NAMES[i]) && g_supported[i]) found = i;
        if (found >= 0) best = found;
        else fprintf(stderr, "maq: MAQ_FORCE_PATH=%s is not a supported path (%s); using %s\n",
                     force, g_supported_str, PATH_NAMES[best]);
    }
    atomic_store(&g_path, best);
}

static void ensure_init(void) { pthread_once(&g_once, detect); }

const char *maq_compiled_paths(void) {
#if defined(MAQ_X86)
    return "scalar,sse,avx2,vnni,amx";
#elif defined(MAQ_NEON)
    return "scalar,neon,dotprod";
#else
    return "scalar";
#endif
}

const char *maq_supported_paths(void) {
    ensure_init();
    return g_supported_str;
}

int maq_cpu_gfni(void) {
    ensure_init();
    return g_gfni;
}

int maq_cpu_vnni(void) {
    ensure_init();
    return g_supported[MAQ_PATH_VNNI];
}

int maq_path_id(void) {
    ensure_init();
    return atomic_load_explicit(&g_path, memory_order_relaxed);
}

const char *maq_active_path(void) { return PATH_NAMES[maq_path_id()]; }

int maq_set_path(const char *name) {
    ensure_init();
    if (!name) return -1;
    for (int i = 0; i < N_PATHS; i++) {
        if (!strcmp(name, PATH_NAMES[i])) {
            if (!g_supported[i]) return -1;
            atomic_store(&g_path, i);
            return 0;
        }
    }
    return -1;
}
