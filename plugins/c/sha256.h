// SHA-256 (FIPS 180-4), streaming: init, update any number of times, then
// the lowercase hex digest. For the mask plugin's hashes.
#ifndef SLUICE_SHA256_H
#define SLUICE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t h[8];
  uint8_t block[64];
  size_t used;     // bytes in `block`
  uint64_t total;  // bytes hashed so far
} sha256_t;

void sha256_init(sha256_t *s);
void sha256_update(sha256_t *s, const uint8_t *data, size_t len);
// Writes 64 hex digits and a terminating NUL to `hex`.
void sha256_hex(sha256_t *s, char hex[65]);

#endif
