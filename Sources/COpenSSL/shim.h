#ifndef CALISSON_COPENSSL_SHIM_H
#define CALISSON_COPENSSL_SHIM_H
// Only the non-deprecated OpenSSL 3 API is visible to Swift.
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#endif
