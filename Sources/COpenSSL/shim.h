#ifndef CALISSON_COPENSSL_SHIM_H
#define CALISSON_COPENSSL_SHIM_H
// Only the non-deprecated OpenSSL 3 API is visible to Swift.
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// Function forms of the macros Transport needs (Swift does not import function-like macros).
static inline int calisson_ssl_ctx_set_tls13_only(SSL_CTX *ctx) {
    return SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) && SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
}
static inline long calisson_bio_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }
static inline void calisson_openssl_free(void *pointer) { OPENSSL_free(pointer); }
static inline void calisson_x509v3_set_ctx_nodb(X509V3_CTX *ctx) { X509V3_set_ctx_nodb(ctx); }
static inline int calisson_ssl_ctx_set_session_cache_off(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}
static inline int calisson_ssl_ctx_set_num_tickets_zero(SSL_CTX *ctx) { return SSL_CTX_set_num_tickets(ctx, 0); }
#endif
