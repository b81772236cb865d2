// Portable part of CHotPath: backend dispatch, the streaming context, the OpenSSL
// fallback compression, Merkle tag midstates and level reduction.
#define OPENSSL_SUPPRESS_DEPRECATED 1  // SHA256_Transform is the low-level block function we want.
#include "CHotPath.h"
#include "sha256_internal.h"

#include <openssl/sha.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

const uint32_t chp_sha256_k[64] __attribute__((aligned(16))) = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static const uint32_t sha256_iv[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

uint32_t chp_merkle_leaf_midstate[8];
uint32_t chp_merkle_node_midstate[8];
uint32_t chp_pad128_wk[64] __attribute__((aligned(16)));

// ---------------------------------------------------------------------------------
// Backend selection

static int has_sha_ni = -1;

static int detect_sha_ni(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const int sha = (b >> 29) & 1;
    return ssse3 && sse41 && sha;
#else
    return 0;
#endif
}

int chp_cpu_has_sha_ni(void) {
    // Written once by the library constructor below, before any other call.
    return has_sha_ni;
}

int chp_sha256_effective_backend(int requested) {
    return (requested == CHP_BACKEND_SHANI && has_sha_ni == 1) ? CHP_BACKEND_SHANI : CHP_BACKEND_OPENSSL;
}

// ---------------------------------------------------------------------------------
// Block compression

static void compress_openssl(uint32_t h[8], const uint8_t *blocks, size_t count) {
    SHA256_CTX c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < 8; i++) c.h[i] = h[i];
    for (size_t i = 0; i < count; i++) SHA256_Transform(&c, blocks + 64 * i);
    for (int i = 0; i < 8; i++) h[i] = c.h[i];
}

static inline void compress(int backend, uint32_t h[8], const uint8_t *blocks, size_t count) {
#if CHP_HAVE_SHANI
    if (backend == CHP_BACKEND_SHANI) { chp_shani_compress(h, blocks, count); return; }
#endif
    compress_openssl(h, blocks, count);
}

void chp_sha256_block_midstate(int backend, const uint8_t block[64], uint32_t h[8]) {
    memcpy(h, sha256_iv, sizeof sha256_iv);
    compress(chp_sha256_effective_backend(backend), h, block, 1);
}

// ---------------------------------------------------------------------------------
// Streaming context

void chp_sha256_init(chp_sha256_ctx *ctx, int backend) {
    chp_sha256_init_midstate(ctx, backend, sha256_iv, 0);
}

void chp_sha256_init_midstate(chp_sha256_ctx *ctx, int backend, const uint32_t h[8], uint64_t absorbed) {
    memcpy(ctx->h, h, 32);
    ctx->total = absorbed;
    ctx->buffered = 0;
    ctx->backend = chp_sha256_effective_backend(backend);
}

void chp_sha256_update(chp_sha256_ctx *ctx, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    ctx->total += len;
    if (ctx->buffered) {
        size_t take = 64 - ctx->buffered;
        if (take > len) take = len;
        memcpy(ctx->buf + ctx->buffered, p, take);
        ctx->buffered += (uint32_t)take;
        p += take;
        len -= take;
        if (ctx->buffered < 64) return;
        compress(ctx->backend, ctx->h, ctx->buf, 1);
        ctx->buffered = 0;
    }
    const size_t blocks = len / 64;
    if (blocks) {
        compress(ctx->backend, ctx->h, p, blocks);
        p += blocks * 64;
        len -= blocks * 64;
    }
    if (len) {
        memcpy(ctx->buf, p, len);
        ctx->buffered = (uint32_t)len;
    }
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

void chp_sha256_final(chp_sha256_ctx *ctx, uint8_t out[32]) {
    const uint64_t bits = ctx->total * 8;
    uint32_t n = ctx->buffered;
    ctx->buf[n++] = 0x80;
    if (n > 56) {
        memset(ctx->buf + n, 0, 64 - n);
        compress(ctx->backend, ctx->h, ctx->buf, 1);
        n = 0;
    }
    memset(ctx->buf + n, 0, 56 - n);
    store_be32(ctx->buf + 56, (uint32_t)(bits >> 32));
    store_be32(ctx->buf + 60, (uint32_t)bits);
    compress(ctx->backend, ctx->h, ctx->buf, 1);
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, ctx->h[i]);
    ctx->buffered = 0;
}

void chp_sha256(int backend, const void *data, size_t len, uint8_t out[32]) {
    chp_sha256_ctx ctx;
    chp_sha256_init(&ctx, backend);
    chp_sha256_update(&ctx, data, len);
    chp_sha256_final(&ctx, out);
}

// ---------------------------------------------------------------------------------
// Merkle

static void tag_midstate(const char *tag, uint32_t h[8]) {
    uint8_t block[64];
    chp_sha256(CHP_BACKEND_OPENSSL, tag, strlen(tag), block);
    memcpy(block + 32, block, 32);
    chp_sha256_block_midstate(CHP_BACKEND_OPENSSL, block, h);
}

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

// W + K for the final block of every 128-byte message (a node: tag prefix + two
// digests). It is pure padding, so its schedule is the same for every node.
static void precompute_pad128(void) {
    uint32_t w[64] = {0};
    w[0] = 0x80000000u;
    w[15] = 128 * 8;
    for (int t = 16; t < 64; t++) {
        const uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
        const uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = s1 + w[t - 7] + s0 + w[t - 16];
    }
    for (int t = 0; t < 64; t++) chp_pad128_wk[t] = w[t] + chp_sha256_k[t];
}

__attribute__((constructor)) static void chp_init(void) {
    has_sha_ni = detect_sha_ni();
    tag_midstate(CHP_MERKLE_LEAF_TAG, chp_merkle_leaf_midstate);
    tag_midstate(CHP_MERKLE_NODE_TAG, chp_merkle_node_midstate);
    precompute_pad128();
}

void chp_merkle_leaf(int backend, const uint8_t digest[32], uint8_t out[32]) {
    chp_merkle_leaves(backend, digest, 1, out);
}

void chp_merkle_node(int backend, const uint8_t left[32], const uint8_t right[32], uint8_t out[32]) {
    backend = chp_sha256_effective_backend(backend);
#if CHP_HAVE_SHANI
    if (backend == CHP_BACKEND_SHANI) { chp_shani_node2(left, right, out); return; }
#endif
    chp_sha256_ctx ctx;
    chp_sha256_init_midstate(&ctx, backend, chp_merkle_node_midstate, 64);
    chp_sha256_update(&ctx, left, 32);
    chp_sha256_update(&ctx, right, 32);
    chp_sha256_final(&ctx, out);
}

void chp_merkle_leaves(int backend, const uint8_t *digests, size_t count, uint8_t *out) {
    backend = chp_sha256_effective_backend(backend);
#if CHP_HAVE_SHANI
    if (backend == CHP_BACKEND_SHANI) {
        size_t i = 0;
        for (; i + 2 <= count; i += 2)
            chp_shani_leaf_x2(digests + 32 * i, digests + 32 * (i + 1), out + 32 * i, out + 32 * (i + 1));
        if (i < count) chp_shani_leaf_x1(digests + 32 * i, out + 32 * i);
        return;
    }
#endif
    for (size_t i = 0; i < count; i++) {
        chp_sha256_ctx ctx;
        chp_sha256_init_midstate(&ctx, backend, chp_merkle_leaf_midstate, 64);
        chp_sha256_update(&ctx, digests + 32 * i, 32);
        chp_sha256_final(&ctx, out + 32 * i);
    }
}

void chp_merkle_pairs(int backend, const uint8_t *in, size_t pairs, uint8_t *out) {
    backend = chp_sha256_effective_backend(backend);
#if CHP_HAVE_SHANI
    if (backend == CHP_BACKEND_SHANI) {
        size_t i = 0;
        // Each call loads all of its input before storing, and writes at or below the
        // offset it reads from, which makes the in-place reduction (out == in) safe.
        for (; i + 2 <= pairs; i += 2)
            chp_shani_node_x2(in + 64 * i, in + 64 * (i + 1), out + 32 * i, out + 32 * (i + 1));
        if (i < pairs) chp_shani_node2(in + 64 * i, in + 64 * i + 32, out + 32 * i);
        return;
    }
#endif
    for (size_t i = 0; i < pairs; i++) {
        uint8_t node[32];
        chp_sha256_ctx ctx;
        chp_sha256_init_midstate(&ctx, backend, chp_merkle_node_midstate, 64);
        chp_sha256_update(&ctx, in + 64 * i, 64);
        chp_sha256_final(&ctx, node);
        memcpy(out + 32 * i, node, 32);
    }
}

/// Reduces n >= 1 nodes in buf to their root, level by level, in place.
static void reduce_in_place(int backend, uint8_t *buf, size_t n) {
    while (n > 1) {
        const size_t pairs = n / 2;
        chp_merkle_pairs(backend, buf, pairs, buf);
        if (n & 1) memmove(buf + 32 * pairs, buf + 32 * (n - 1), 32);
        n = pairs + (n & 1);
    }
}

size_t chp_merkle_root_scratch_bytes(size_t count) {
    const size_t chunks = (count + CHP_MERKLE_CHUNK_LEAVES - 1) / CHP_MERKLE_CHUNK_LEAVES;
    return 32 * (CHP_MERKLE_CHUNK_LEAVES + chunks);
}

// Aligned chunks of CHP_MERKLE_CHUNK_LEAVES (a power of two) leaves are perfect subtrees
// of the level-by-level tree, and a last partial chunk reduces exactly as it would inside
// the whole level (full chunks contribute an even count at every level below the chunk
// root, so the parity that decides promotion is the partial chunk's own). Reducing chunk
// by chunk in a buffer that stays in cache, then reducing the chunk roots, therefore
// gives the same root as reducing whole levels, without a scratch level of n nodes.
int chp_merkle_root(int backend, const uint8_t *digests, size_t count, uint8_t *scratch, uint8_t out[32]) {
    if (count == 0) return -1;
    backend = chp_sha256_effective_backend(backend);
    uint8_t *work = scratch, *roots = scratch + 32 * CHP_MERKLE_CHUNK_LEAVES;
    size_t chunks = 0;
    for (size_t start = 0; start < count; start += CHP_MERKLE_CHUNK_LEAVES) {
        const size_t n = count - start < CHP_MERKLE_CHUNK_LEAVES ? count - start : CHP_MERKLE_CHUNK_LEAVES;
        chp_merkle_leaves(backend, digests + 32 * start, n, work);
        reduce_in_place(backend, work, n);
        memcpy(roots + 32 * chunks++, work, 32);
    }
    reduce_in_place(backend, roots, chunks);
    memcpy(out, roots, 32);
    return 0;
}
