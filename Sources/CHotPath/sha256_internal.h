// Shared between the CHotPath translation units; not part of the public header.
#ifndef CALISSON_CHOTPATH_INTERNAL_H
#define CALISSON_CHOTPATH_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#define CHP_HAVE_SHANI 1
#else
#define CHP_HAVE_SHANI 0
#endif

extern const uint32_t chp_sha256_k[64];
/// Chaining values after the 64-byte tag prefix of Merkle leaves and nodes.
extern uint32_t chp_merkle_leaf_midstate[8];
extern uint32_t chp_merkle_node_midstate[8];
/// W[t] + K[t] of the padding block that ends every 128-byte message.
extern uint32_t chp_pad128_wk[64];

#if CHP_HAVE_SHANI
// Callers must have checked chp_cpu_has_sha_ni().
void chp_shani_compress(uint32_t h[8], const uint8_t *blocks, size_t count);
void chp_shani_leaf_x1(const uint8_t *d, uint8_t *out);
void chp_shani_leaf_x2(const uint8_t *d0, const uint8_t *d1, uint8_t *out0, uint8_t *out1);
/// node(left, right) for one pair; left and right need not be adjacent.
void chp_shani_node2(const uint8_t *left, const uint8_t *right, uint8_t *out);
/// Two nodes at once: in0 and in1 each point at left || right (64 bytes).
void chp_shani_node_x2(const uint8_t *in0, const uint8_t *in1, uint8_t *out0, uint8_t *out1);
#endif
#endif
