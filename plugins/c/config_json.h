// A small reader for the mask's JSON configuration: an object whose values
// are strings, string arrays, null, or an object of strings. Enough for
// plugin configurations; not a general JSON library. Strings are decoded
// (escapes included) into NUL-terminated UTF-8 copies the caller frees.
#ifndef SLUICE_CONFIG_JSON_H
#define SLUICE_CONFIG_JSON_H

#include <stddef.h>

typedef struct {
  const char *at;   // next character to read
  const char *end;  // one past the last character
  char error[200];  // what went wrong, when a function returns 0
} json_reader_t;

// Each returns 1 on success, 0 on a syntax error (recorded in `error`).
int json_expect(json_reader_t *r, char c);       // skips white space, then `c`
int json_peek(json_reader_t *r, char *c);         // skips white space, shows next char
int json_string(json_reader_t *r, char **out);    // a string, decoded, malloc'ed
int json_null(json_reader_t *r);                  // the literal null
int json_end(json_reader_t *r);                   // only white space is left

#endif
