// The mask transform in C: hashes, redacts or drops columns by name,
// exactly as the Rust `mask` plugin does (configuration and semantics in
// plugins/README.md), so that either can replace the other. Built with
// wit-bindgen's C generator (transform.h/.c, generated into the build
// folder from wit/) and clang for wasm32-wasip2.
//
// Memory: the host's batch is owned by `exports_transform_transform`; it is
// changed in place (values replaced and columns removed are freed) and
// handed back whole as the result, which the generated post-return code
// frees.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_json.h"
#include "sha256.h"
#include "transform.h"
#include "value_text.h"

typedef sluice_plugin_types_value_t value_t;
typedef sluice_plugin_types_list_value_t values_t;

enum action { HASH, REDACT, DROP };

typedef struct {
  char *name;
  enum action action;
} column_rule_t;

typedef struct {
  char *schema;  // NULL: any schema
  char *table;   // NULL: any table
} table_pattern_t;

// The configuration `init` parsed; one per instance.
static struct {
  column_rule_t *columns;
  size_t column_count;
  char *salt;
  char *redaction;
  table_pattern_t *tables;  // NULL: every table
  size_t table_count;
} mask;

static bool bad_config(transform_plugin_error_t *err, const char *message) {
  err->tag = SLUICE_PLUGIN_TYPES_PLUGIN_ERROR_BAD_CONFIG;
  transform_string_dup(&err->val.bad_config, message);
  return false;
}

static int same(const transform_string_t *a, const char *b) {
  size_t n = strlen(b);
  return a->len == n && memcmp(a->ptr, b, n) == 0;
}

static int parse_columns(json_reader_t *r, char *error, size_t size) {
  if (!json_expect(r, '{')) return 0;
  char c;
  if (!json_peek(r, &c)) return 0;
  if (c == '}') return json_expect(r, '}');
  do {
    char *name, *action;
    if (!json_string(r, &name) || !json_expect(r, ':') || !json_string(r, &action)) return 0;
    enum action a;
    if (strcmp(action, "hash") == 0) a = HASH;
    else if (strcmp(action, "redact") == 0) a = REDACT;
    else if (strcmp(action, "drop") == 0) a = DROP;
    else {
      snprintf(error, size,
               "config key `columns.%s`: unknown variant `%s`, expected one of `hash`, `redact`, `drop`",
               name, action);
      return -1;
    }
    free(action);
    mask.columns = realloc(mask.columns, (mask.column_count + 1) * sizeof *mask.columns);
    mask.columns[mask.column_count++] = (column_rule_t){name, a};
    if (!json_peek(r, &c)) return 0;
  } while (c == ',' && json_expect(r, ','));
  return json_expect(r, '}');
}

static int parse_tables(json_reader_t *r, char *error, size_t size) {
  char c;
  if (!json_peek(r, &c)) return 0;
  if (c == 'n') return json_null(r);
  if (!json_expect(r, '[')) return 0;
  mask.tables = malloc(sizeof *mask.tables);  // non-NULL even when empty: no table matches
  if (!json_peek(r, &c)) return 0;
  if (c == ']') return json_expect(r, ']');
  do {
    char *text;
    if (!json_string(r, &text)) return 0;
    char *dot = strchr(text, '.');
    table_pattern_t p = {NULL, text};
    if (dot) {
      *dot = '\0';
      p.schema = text;
      p.table = dot + 1;
    }
    if ((p.schema && *p.schema == '\0') || *p.table == '\0') {
      if (dot) *dot = '.';
      snprintf(error, size,
               "config key `tables`: `%s` is not a table pattern: expected `schema.table`, `schema.*` or `table`",
               text);
      return -1;
    }
    if (strcmp(p.table, "*") == 0) p.table = NULL;
    mask.tables = realloc(mask.tables, (mask.table_count + 1) * sizeof *mask.tables);
    mask.tables[mask.table_count++] = p;
    if (!json_peek(r, &c)) return 0;
  } while (c == ',' && json_expect(r, ','));
  return json_expect(r, ']');
}

static bool init(transform_string_t *config, transform_plugin_error_t *err) {
  json_reader_t r = {(const char *)config->ptr, (const char *)config->ptr + config->len, ""};
  char error[300] = "";
  int has_columns = 0;
  mask.salt = strdup("");
  mask.redaction = strdup("***");
  int ok = json_expect(&r, '{');
  char c = '}';
  if (ok) ok = json_peek(&r, &c);
  while (ok && c != '}') {
    char *key;
    ok = json_string(&r, &key) && json_expect(&r, ':');
    if (!ok) break;
    if (strcmp(key, "columns") == 0) {
      ok = parse_columns(&r, error, sizeof error);
      has_columns = 1;
    } else if (strcmp(key, "salt") == 0) {
      free(mask.salt);
      ok = json_string(&r, &mask.salt);
    } else if (strcmp(key, "redaction") == 0) {
      free(mask.redaction);
      ok = json_string(&r, &mask.redaction);
    } else if (strcmp(key, "tables") == 0) {
      ok = parse_tables(&r, error, sizeof error);
    } else {
      snprintf(error, sizeof error,
               "config: unknown field `%s`, expected one of `columns`, `salt`, `redaction`, `tables`", key);
      ok = -1;
    }
    free(key);
    if (ok != 1) break;
    ok = json_peek(&r, &c);
    if (ok && c == ',') ok = json_expect(&r, ',') && json_peek(&r, &c);
  }
  if (ok == 1) ok = json_expect(&r, '}') && json_end(&r);
  if (ok == -1) return bad_config(err, error);
  if (ok == 0) return bad_config(err, r.error);
  if (!has_columns) return bad_config(err, "config: missing field `columns`");

  char count[24];
  snprintf(count, sizeof count, "%zu", mask.column_count);
  transform_tuple2_string_string_t field;
  transform_string_set(&field.f0, "columns");
  transform_string_set(&field.f1, count);
  transform_list_tuple2_string_string_t fields = {&field, 1};
  transform_string_t message;
  transform_string_set(&message, "masking columns");
  sluice_plugin_host_log(SLUICE_PLUGIN_HOST_LEVEL_INFO, &message, &fields);
  return true;
}

// The configuration string is ours to free (wit-bindgen's C exports own
// their arguments).
bool exports_transform_init(transform_string_t *config, transform_plugin_error_t *err) {
  bool ok = init(config, err);
  transform_string_free(config);
  return ok;
}

static int table_matches(const sluice_plugin_types_relation_t *relation) {
  if (!mask.tables) return 1;
  for (size_t i = 0; i < mask.table_count; i++) {
    const table_pattern_t *p = &mask.tables[i];
    if ((!p->schema || same(&relation->schema, p->schema)) &&
        (!p->table || same(&relation->name, p->table)))
      return 1;
  }
  return 0;
}

static const column_rule_t *rule_for(const transform_string_t *name) {
  for (size_t i = 0; i < mask.column_count; i++) {
    if (same(name, mask.columns[i].name)) return &mask.columns[i];
  }
  return NULL;
}

// SHA-256 of the salt and the value's bytes, as lowercase hex, into `hex`.
static void hash_value(const value_t *v, char hex[65]) {
  sha256_t s;
  sha256_init(&s);
  sha256_update(&s, (const uint8_t *)mask.salt, strlen(mask.salt));
  switch (v->tag) {
    case SLUICE_PLUGIN_TYPES_VALUE_NUMERIC:
    case SLUICE_PLUGIN_TYPES_VALUE_TEXT:
    case SLUICE_PLUGIN_TYPES_VALUE_JSON:
    case SLUICE_PLUGIN_TYPES_VALUE_UUID:
    case SLUICE_PLUGIN_TYPES_VALUE_OTHER:
      // Every text-like case holds a string in the same place.
      sha256_update(&s, v->val.text.ptr, v->val.text.len);
      break;
    case SLUICE_PLUGIN_TYPES_VALUE_BYTES:
      sha256_update(&s, v->val.bytes.ptr, v->val.bytes.len);
      break;
    default: {
      char text[512];
      size_t n = value_text(v, text);
      sha256_update(&s, (const uint8_t *)text, n);
    }
  }
  sha256_hex(&s, hex);
}

static void remove_value(values_t *values, size_t column) {
  if (column >= values->len) return;
  sluice_plugin_types_value_free(&values->ptr[column]);
  memmove(&values->ptr[column], &values->ptr[column + 1], (values->len - column - 1) * sizeof(value_t));
  values->len--;
}

static void drop_column(transform_batch_t *batch, uint32_t relation, size_t column) {
  sluice_plugin_types_list_column_t *columns = &batch->relations.ptr[relation].columns;
  sluice_plugin_types_column_free(&columns->ptr[column]);
  memmove(&columns->ptr[column], &columns->ptr[column + 1],
          (columns->len - column - 1) * sizeof columns->ptr[0]);
  columns->len--;
  for (size_t e = 0; e < batch->events.len; e++) {
    sluice_plugin_types_event_t *event = &batch->events.ptr[e];
    if (event->tag != SLUICE_PLUGIN_TYPES_EVENT_ROW || event->val.row.relation != relation) continue;
    if (event->val.row.old.is_some) remove_value(&event->val.row.old.val, column);
    if (event->val.row.new_.is_some) remove_value(&event->val.row.new_.val, column);
  }
}

static void count(const char *name, uint64_t delta) {
  if (!delta) return;
  transform_string_t s;
  transform_string_set(&s, name);
  sluice_plugin_host_counter_add(&s, delta);
}

bool exports_transform_transform(transform_batch_t *batch, transform_batch_t *ret,
                                 transform_plugin_error_t *err) {
  (void)err;
  uint64_t hashed = 0, redacted = 0;
  for (uint32_t r = 0; r < batch->relations.len; r++) {
    if (!table_matches(&batch->relations.ptr[r])) continue;
    // From the last column down, so that dropping keeps the indexes still
    // to visit valid.
    for (size_t c = batch->relations.ptr[r].columns.len; c-- > 0;) {
      sluice_plugin_types_column_t *column = &batch->relations.ptr[r].columns.ptr[c];
      const column_rule_t *rule = rule_for(&column->name);
      if (!rule) continue;
      if (rule->action == DROP) {
        drop_column(batch, r, c);
        continue;
      }
      column->type_oid = 25;
      column->type_modifier = -1;
      transform_string_free(&column->type_name);
      transform_string_dup(&column->type_name, "text");
      for (size_t e = 0; e < batch->events.len; e++) {
        sluice_plugin_types_event_t *event = &batch->events.ptr[e];
        if (event->tag != SLUICE_PLUGIN_TYPES_EVENT_ROW || event->val.row.relation != r) continue;
        sluice_plugin_types_option_list_value_t *sides[2] = {&event->val.row.old, &event->val.row.new_};
        for (int side = 0; side < 2; side++) {
          if (!sides[side]->is_some || c >= sides[side]->val.len) continue;
          value_t *value = &sides[side]->val.ptr[c];
          if (value->tag == SLUICE_PLUGIN_TYPES_VALUE_NULL ||
              value->tag == SLUICE_PLUGIN_TYPES_VALUE_UNCHANGED_TOAST)
            continue;
          char hex[65];
          const char *replacement = mask.redaction;
          if (rule->action == HASH) {
            hash_value(value, hex);
            replacement = hex;
            hashed++;
          } else {
            redacted++;
          }
          sluice_plugin_types_value_free(value);
          value->tag = SLUICE_PLUGIN_TYPES_VALUE_TEXT;
          transform_string_dup(&value->val.text, replacement);
        }
      }
    }
  }
  count("values_hashed", hashed);
  count("values_redacted", redacted);
  *ret = *batch;
  return true;
}
