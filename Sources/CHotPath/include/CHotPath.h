// CHotPath: the C kernels of Calisson's hot path.
//
// SHA-256 runs on the x86 SHA extensions (SHA-NI) when the CPU has them, detected at
// run time, and otherwise on OpenSSL's low-level SHA-256 block function. Every entry
// point takes the backend the caller asks for; a request for SHA-NI on a CPU without
// it silently uses OpenSSL, so no caller can ever execute an unsupported instruction.
//
// Merkle hashing is domain separated with tagged hashes: a leaf is
// SHA-256(T_leaf || T_leaf || digest) and a node SHA-256(T_node || T_node || left || right),
// where T_x = SHA-256(tag x). The 64-byte tag prefix is one SHA-256 block, so its
// compression is done once (a "midstate") and reused for every leaf and node.
#ifndef CALISSON_CHOTPATH_H
#define CALISSON_CHOTPATH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHP_BACKEND_OPENSSL 0
#define CHP_BACKEND_SHANI 1

#define CHP_MERKLE_LEAF_TAG "calisson/merkle/leaf/v1"
#define CHP_MERKLE_NODE_TAG "calisson/merkle/node/v1"

/// 1 when this CPU has SHA-NI, SSSE3 and SSE4.1; 0 otherwise. Computed once.
int chp_cpu_has_sha_ni(void);

/// The backend actually used for a request: SHA-NI only if asked for and available.
int chp_sha256_effective_backend(int requested);

/// Streaming SHA-256. Plain data: treat as opaque outside CHotPath.
typedef struct chp_sha256_ctx {
    uint32_t h[8];
    uint64_t total;     // bytes absorbed, including any midstate prefix
    uint32_t buffered;  // bytes waiting in buf
    int32_t backend;    // effective backend
    uint8_t buf[64];
} chp_sha256_ctx;

void chp_sha256_init(chp_sha256_ctx *ctx, int backend);
/// Starts from a midstate that has absorbed `absorbed` bytes (a multiple of 64).
void chp_sha256_init_midstate(chp_sha256_ctx *ctx, int backend, const uint32_t h[8], uint64_t absorbed);
void chp_sha256_update(chp_sha256_ctx *ctx, const void *data, size_t len);
void chp_sha256_final(chp_sha256_ctx *ctx, uint8_t out[32]);
/// One-shot SHA-256.
void chp_sha256(int backend, const void *data, size_t len, uint8_t out[32]);
/// The chaining value after absorbing exactly one 64-byte block from the standard IV.
void chp_sha256_block_midstate(int backend, const uint8_t block[64], uint32_t h[8]);

/// out[i] = leaf(digests[i]) for i < count; 32 bytes each. out must not overlap digests.
void chp_merkle_leaves(int backend, const uint8_t *digests, size_t count, uint8_t *out);
/// out[i] = node(in[2i], in[2i+1]) for i < pairs. out may equal in (in-place level reduction).
void chp_merkle_pairs(int backend, const uint8_t *in, size_t pairs, uint8_t *out);
void chp_merkle_leaf(int backend, const uint8_t digest[32], uint8_t out[32]);
void chp_merkle_node(int backend, const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);
/// Leaves per chunk in chp_merkle_root: 64 KiB of hashes, which stays in L2.
#define CHP_MERKLE_CHUNK_LEAVES 2048
/// Bytes of scratch chp_merkle_root needs for `count` leaves (about 64 KiB + count).
size_t chp_merkle_root_scratch_bytes(size_t count);
/// Root of `count` (>= 1) leaf digests. An unpaired last node at a level is promoted
/// unchanged. scratch holds chp_merkle_root_scratch_bytes(count) bytes.
/// Returns 0, or -1 when count is 0.
int chp_merkle_root(int backend, const uint8_t *digests, size_t count, uint8_t *scratch, uint8_t out[32]);

#ifdef __cplusplus
}
#endif
#endif
