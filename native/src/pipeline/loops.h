// Loop annotations for the sampler's per-element math.
#pragma once

// Marks a loop whose arrays are either disjoint or the same array at the same index (x_t is
// updated in place), so no iteration depends on another. GCC cannot prove that from the
// pointers and would leave the loop scalar; vectorized, every element still sees the same
// IEEE operations in the same order, so results are bit-identical.
#if defined(__GNUC__) && !defined(__clang__)
#define DM_INDEPENDENT_ITERATIONS _Pragma("GCC ivdep")
#else
#define DM_INDEPENDENT_ITERATIONS
#endif
