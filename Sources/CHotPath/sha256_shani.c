// SHA-256 on the x86 SHA extensions.
//
// Register layout required by SHA256RNDS2: one register holds (A, B, E, F) with A in
// the top lane, the other (C, D, G, H). Two rounds update ABEF and the previous ABEF
// becomes the next CDGH, so four rounds (one 128-bit W+K group) return each register
// to its role. The message schedule uses SHA256MSG1/MSG2 on groups of four words.
//
// The two-way functions run two independent messages through the same instruction
// stream. SHA256RNDS2 has a latency of several cycles but can issue more often, so a
// single dependency chain leaves the unit idle; two chains fill it.
#include "sha256_internal.h"

#if CHP_HAVE_SHANI
#include <immintrin.h>
#include <string.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

typedef struct { __m128i abef, cdgh; } state_t;

SHANI static inline __m128i bswap_mask(void) {
    return _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
}

SHANI static inline state_t state_load(const uint32_t h[8]) {
    const __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]);  // lanes a b c d
    const __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]);  // lanes e f g h
    const __m128i badc = _mm_shuffle_epi32(dcba, 0xB1);            // lanes b a d c
    const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);            // lanes h g f e
    state_t s;
    s.abef = _mm_alignr_epi8(badc, efgh, 8);                       // lanes f e b a
    s.cdgh = _mm_blend_epi16(efgh, badc, 0xF0);                    // lanes h g d c
    return s;
}

SHANI static inline void state_store(state_t s, uint32_t h[8]) {
    const __m128i feba = _mm_shuffle_epi32(s.abef, 0x1B);          // lanes a b e f
    const __m128i dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);          // lanes g h c d
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));  // a b c d
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));     // e f g h
}

/// The digest bytes (big-endian words) of a state.
SHANI static inline void state_digest(state_t s, uint8_t out[32]) {
    uint32_t h[8];
    state_store(s, h);
    const __m128i m = bswap_mask();
    _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)&h[0]), m));
    _mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)&h[4]), m));
}

SHANI static inline void rounds4(state_t *s, __m128i wk) {
    s->cdgh = _mm_sha256rnds2_epu32(s->cdgh, s->abef, wk);
    s->abef = _mm_sha256rnds2_epu32(s->abef, s->cdgh, _mm_shuffle_epi32(wk, 0x0E));
}

/// W[4g..4g+3] from the four previous groups.
SHANI static inline __m128i schedule(__m128i w0, __m128i w1, __m128i w2, __m128i w3) {
    const __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
    return _mm_sha256msg2_epu32(t, w3);
}

SHANI static inline __m128i k_group(int g) {
    return _mm_load_si128((const __m128i *)&chp_sha256_k[4 * g]);
}

SHANI static inline __m128i load_words(const uint8_t *p) {
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), bswap_mask());
}

/// One block, one message. w holds the block's 16 words, byte-swapped.
SHANI static inline void block_x1(state_t *s, __m128i w0, __m128i w1, __m128i w2, __m128i w3) {
    const state_t saved = *s;
    rounds4(s, _mm_add_epi32(w0, k_group(0)));
    rounds4(s, _mm_add_epi32(w1, k_group(1)));
    rounds4(s, _mm_add_epi32(w2, k_group(2)));
    rounds4(s, _mm_add_epi32(w3, k_group(3)));
    for (int g = 4; g < 16; g++) {
        const __m128i w4 = schedule(w0, w1, w2, w3);
        rounds4(s, _mm_add_epi32(w4, k_group(g)));
        w0 = w1; w1 = w2; w2 = w3; w3 = w4;
    }
    s->abef = _mm_add_epi32(s->abef, saved.abef);
    s->cdgh = _mm_add_epi32(s->cdgh, saved.cdgh);
}

/// One block for each of two messages, interleaved.
SHANI static inline void block_x2(state_t *s, state_t *t,
                                  __m128i a0, __m128i a1, __m128i a2, __m128i a3,
                                  __m128i b0, __m128i b1, __m128i b2, __m128i b3) {
    const state_t saved_s = *s, saved_t = *t;
    rounds4(s, _mm_add_epi32(a0, k_group(0))); rounds4(t, _mm_add_epi32(b0, k_group(0)));
    rounds4(s, _mm_add_epi32(a1, k_group(1))); rounds4(t, _mm_add_epi32(b1, k_group(1)));
    rounds4(s, _mm_add_epi32(a2, k_group(2))); rounds4(t, _mm_add_epi32(b2, k_group(2)));
    rounds4(s, _mm_add_epi32(a3, k_group(3))); rounds4(t, _mm_add_epi32(b3, k_group(3)));
    for (int g = 4; g < 16; g++) {
        const __m128i a4 = schedule(a0, a1, a2, a3);
        const __m128i b4 = schedule(b0, b1, b2, b3);
        const __m128i k = k_group(g);
        rounds4(s, _mm_add_epi32(a4, k));
        rounds4(t, _mm_add_epi32(b4, k));
        a0 = a1; a1 = a2; a2 = a3; a3 = a4;
        b0 = b1; b1 = b2; b2 = b3; b3 = b4;
    }
    s->abef = _mm_add_epi32(s->abef, saved_s.abef); s->cdgh = _mm_add_epi32(s->cdgh, saved_s.cdgh);
    t->abef = _mm_add_epi32(t->abef, saved_t.abef); t->cdgh = _mm_add_epi32(t->cdgh, saved_t.cdgh);
}

/// The padding block of a 128-byte message, whose W+K is a constant: no schedule work.
SHANI static inline void pad128_x2(state_t *s, state_t *t) {
    const state_t saved_s = *s, saved_t = *t;
    for (int g = 0; g < 16; g++) {
        const __m128i wk = _mm_load_si128((const __m128i *)&chp_pad128_wk[4 * g]);
        rounds4(s, wk);
        rounds4(t, wk);
    }
    s->abef = _mm_add_epi32(s->abef, saved_s.abef); s->cdgh = _mm_add_epi32(s->cdgh, saved_s.cdgh);
    t->abef = _mm_add_epi32(t->abef, saved_t.abef); t->cdgh = _mm_add_epi32(t->cdgh, saved_t.cdgh);
}

SHANI static inline void pad128_x1(state_t *s) {
    const state_t saved = *s;
    for (int g = 0; g < 16; g++)
        rounds4(s, _mm_load_si128((const __m128i *)&chp_pad128_wk[4 * g]));
    s->abef = _mm_add_epi32(s->abef, saved.abef); s->cdgh = _mm_add_epi32(s->cdgh, saved.cdgh);
}

SHANI void chp_shani_compress(uint32_t h[8], const uint8_t *blocks, size_t count) {
    state_t s = state_load(h);
    for (size_t i = 0; i < count; i++, blocks += 64)
        block_x1(&s, load_words(blocks), load_words(blocks + 16), load_words(blocks + 32), load_words(blocks + 48));
    state_store(s, h);
}

// A leaf message is the 64-byte tag prefix, then 32 digest bytes, so its second
// (last) block is the digest followed by padding for a 96-byte message.
SHANI static inline __m128i leaf_pad_w2(void) { return _mm_set_epi32(0, 0, 0, (int)0x80000000u); }
SHANI static inline __m128i leaf_pad_w3(void) { return _mm_set_epi32(96 * 8, 0, 0, 0); }

SHANI void chp_shani_leaf_x1(const uint8_t *d, uint8_t *out) {
    state_t s = state_load(chp_merkle_leaf_midstate);
    block_x1(&s, load_words(d), load_words(d + 16), leaf_pad_w2(), leaf_pad_w3());
    state_digest(s, out);
}

SHANI void chp_shani_leaf_x2(const uint8_t *d0, const uint8_t *d1, uint8_t *out0, uint8_t *out1) {
    state_t s = state_load(chp_merkle_leaf_midstate), t = s;
    const __m128i p2 = leaf_pad_w2(), p3 = leaf_pad_w3();
    block_x2(&s, &t, load_words(d0), load_words(d0 + 16), p2, p3, load_words(d1), load_words(d1 + 16), p2, p3);
    state_digest(s, out0);
    state_digest(t, out1);
}

SHANI void chp_shani_node2(const uint8_t *left, const uint8_t *right, uint8_t *out) {
    state_t s = state_load(chp_merkle_node_midstate);
    block_x1(&s, load_words(left), load_words(left + 16), load_words(right), load_words(right + 16));
    pad128_x1(&s);
    state_digest(s, out);
}

SHANI void chp_shani_node_x2(const uint8_t *in0, const uint8_t *in1, uint8_t *out0, uint8_t *out1) {
    state_t s = state_load(chp_merkle_node_midstate), t = s;
    // Every input word is loaded here, before any output is stored (in-place safety).
    block_x2(&s, &t, load_words(in0), load_words(in0 + 16), load_words(in0 + 32), load_words(in0 + 48),
             load_words(in1), load_words(in1 + 16), load_words(in1 + 32), load_words(in1 + 48));
    pad128_x2(&s, &t);
    state_digest(s, out0);
    state_digest(t, out1);
}
#endif
