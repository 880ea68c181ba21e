// See config_json.h.
#include "config_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void skip_space(json_reader_t *r) {
  while (r->at < r->end && (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r')) r->at++;
}

static int fail(json_reader_t *r, const char *what) {
  snprintf(r->error, sizeof r->error, "config: invalid JSON: %s at byte %zu", what,
           (size_t)(r->end - r->at));
  return 0;
}

int json_peek(json_reader_t *r, char *c) {
  skip_space(r);
  if (r->at >= r->end) return fail(r, "unexpected end");
  *c = *r->at;
  return 1;
}

int json_expect(json_reader_t *r, char c) {
  char next;
  if (!json_peek(r, &next)) return 0;
  if (next != c) {
    char what[32];
    snprintf(what, sizeof what, "expected `%c`", c);
    return fail(r, what);
  }
  r->at++;
  return 1;
}

int json_null(json_reader_t *r) {
  skip_space(r);
  if (r->end - r->at >= 4 && memcmp(r->at, "null", 4) == 0) {
    r->at += 4;
    return 1;
  }
  return fail(r, "expected null");
}

int json_end(json_reader_t *r) {
  skip_space(r);
  return r->at == r->end ? 1 : fail(r, "trailing characters");
}

static int hex4(json_reader_t *r, unsigned *out) {
  if (r->end - r->at < 4) return fail(r, "short \\u escape");
  *out = 0;
  for (int i = 0; i < 4; i++) {
    char c = *r->at++;
    unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                        : 16;
    if (d == 16) return fail(r, "bad \\u escape");
    *out = *out << 4 | d;
  }
  return 1;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 63)); return 2; }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 63));
    out[2] = (char)(0x80 | (cp & 63)); return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 63));
  out[2] = (char)(0x80 | (cp >> 6 & 63)); out[3] = (char)(0x80 | (cp & 63)); return 4;
}

int json_string(json_reader_t *r, char **out) {
  if (!json_expect(r, '"')) return 0;
  // Decoding never makes a string longer than its JSON form.
  char *s = malloc((size_t)(r->end - r->at) + 1);
  size_t n = 0;
  while (r->at < r->end && *r->at != '"') {
    char c = *r->at++;
    if (c != '\\') {
      s[n++] = c;
      continue;
    }
    if (r->at >= r->end) break;
    char e = *r->at++;
    const char *simple = strchr("\"\\/bfnrt", e);
    if (simple && e) {
      static const char decoded[] = "\"\\/\b\f\n\r\t";
      s[n++] = decoded[simple - "\"\\/bfnrt"];
    } else if (e == 'u') {
      unsigned cp;
      if (!hex4(r, &cp)) { free(s); return 0; }
      if (cp >= 0xD800 && cp < 0xDC00 && r->end - r->at >= 6 && r->at[0] == '\\' && r->at[1] == 'u') {
        unsigned low;
        r->at += 2;
        if (!hex4(r, &low)) { free(s); return 0; }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      n += put_utf8(s + n, cp);
    } else {
      free(s);
      return fail(r, "bad escape");
    }
  }
  if (r->at >= r->end) { free(s); return fail(r, "unterminated string"); }
  r->at++;
  s[n] = '\0';
  *out = s;
  return 1;
}
