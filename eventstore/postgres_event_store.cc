#include "eventstore/postgres_event_store.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "eventstore/internal/validation.h"
#include "framework/migrations.h"
#include "framework/pg_listener.h"
#include "framework/status_macros.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::eventstore {
namespace {

using eventstore_internal::StreamDeleted;
using eventstore_internal::StreamNotFound;
using eventstore_internal::ValidateLimit;
using eventstore_internal::ValidateStreamId;

// Expected-version encoding for the SQL functions: >= 0 exact (0 = no
// stream), -1 any, -2 stream exists.
constexpr int64_t kSqlAny = -1;
constexpr int64_t kSqlStreamExists = -2;

int64_t ToSqlExpected(const ExpectedVersion& expected) {
  switch (expected.kind()) {
    case ExpectedVersion::Kind::kAny:
      return kSqlAny;
    case ExpectedVersion::Kind::kStreamExists:
      return kSqlStreamExists;
    case ExpectedVersion::Kind::kNoStream:
    case ExpectedVersion::Kind::kExactly:
      return expected.version();
  }
  return kSqlAny;
}

// Never edit a migration that has shipped; append a new one instead.
constexpr char kComponent[] = "eventstore";
constexpr Migration kMigrations[] = {
    {1, "events, deleted streams, snapshots, append function", R"sql(
CREATE TABLE {s}.events (
  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
  stream_id       text        NOT NULL,
  stream_version  bigint      NOT NULL,
  event_id        uuid        NOT NULL,
  event_type      text        NOT NULL,
  schema_version  integer     NOT NULL,
  data            json        NOT NULL,
  metadata        json        NOT NULL,
  recorded_at     timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT events_event_id_key UNIQUE (event_id),
  CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_commit_order_idx
  ON {s}.events (transaction_id, global_position);
CREATE INDEX events_category_idx
  ON {s}.events ((split_part(stream_id, '-', 1)), transaction_id,
                 global_position);

CREATE TABLE {s}.deleted_streams (
  stream_id  text        PRIMARY KEY,
  version    bigint      NOT NULL,
  deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {s}.snapshots (
  stream_id      text        PRIMARY KEY,
  stream_version bigint      NOT NULL,
  schema_version integer     NOT NULL,
  state          jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- The careful path of an append (the store first tries a single INSERT
-- statement, see kFastAppend): appends the events of p_events (a JSON array
-- of {"id","type","v","data","meta"}) to one stream and classifies every
-- outcome.
-- p_expected: >= 0 exact version (0 = no stream), -1 any, -2 stream exists.
-- outcome: 'ok', 'already_stored', 'conflict' (current version in
-- last_version), 'id_conflict', 'deleted'.
CREATE FUNCTION {s}.append_events(p_stream_id text, p_expected bigint,
                                  p_events json, p_notify_channel text)
RETURNS TABLE (outcome text, first_version bigint, last_version bigint,
               tx xid8, last_position bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_count   integer := json_array_length(p_events);
  v_current bigint;
  v_first   bigint;
  v_matched integer;
  v_stream  text;
  v_last    bigint;
BEGIN
  -- One writer per stream at a time (other streams are not blocked). Taken
  -- before any read, so each read below sees the previous writer's commit.
  PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, 7468563));

  -- A retry: the first event id is stored already.
  SELECT e.stream_id, e.stream_version INTO v_stream, v_first
    FROM {s}.events e WHERE e.event_id = (p_events->0->>'id')::uuid;
  IF FOUND THEN
    IF v_stream = p_stream_id THEN
      SELECT count(*) INTO v_matched
        FROM json_array_elements(p_events) WITH ORDINALITY AS n(j, i)
        JOIN {s}.events e ON e.event_id = (n.j->>'id')::uuid
       WHERE e.stream_id = p_stream_id
         AND e.stream_version = v_first + n.i - 1;
      IF v_matched = v_count THEN
        RETURN QUERY
          SELECT 'already_stored'::text, v_first, e.stream_version,
                 e.transaction_id, e.global_position
            FROM {s}.events e
           WHERE e.stream_id = p_stream_id
             AND e.stream_version = v_first + v_count - 1;
        RETURN;
      END IF;
    END IF;
    RETURN QUERY SELECT 'id_conflict'::text, 0::bigint, 0::bigint,
                        NULL::xid8, 0::bigint;
    RETURN;
  END IF;

  IF EXISTS (SELECT 1 FROM {s}.deleted_streams d
              WHERE d.stream_id = p_stream_id) THEN
    RETURN QUERY SELECT 'deleted'::text, 0::bigint, 0::bigint, NULL::xid8,
                        0::bigint;
    RETURN;
  END IF;

  SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM {s}.events e WHERE e.stream_id = p_stream_id;
  IF (p_expected >= 0 AND v_current <> p_expected)
     OR (p_expected = -2 AND v_current = 0) THEN
    RETURN QUERY SELECT 'conflict'::text, 0::bigint, v_current, NULL::xid8,
                        0::bigint;
    RETURN;
  END IF;

  WITH inserted AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT p_stream_id, v_current + n.i, (n.j->>'id')::uuid, n.j->>'type',
           (n.j->>'v')::integer, n.j->'data', n.j->'meta'
      FROM json_array_elements(p_events) WITH ORDINALITY AS n(j, i)
     ORDER BY n.i
    RETURNING global_position
  )
  SELECT max(global_position) INTO v_last FROM inserted;

  IF p_notify_channel <> '' THEN
    PERFORM pg_notify(p_notify_channel,
                      pg_current_xact_id()::text || '.' || v_last::text);
  END IF;
  RETURN QUERY SELECT 'ok'::text, v_current + 1, v_current + v_count,
                      pg_current_xact_id(), v_last;
END
$fn$;

-- Soft delete under the same per-stream lock as appends.
-- outcome: 'ok', 'not_found', 'conflict' (current version in version).
CREATE FUNCTION {s}.delete_stream(p_stream_id text, p_expected bigint)
RETURNS TABLE (outcome text, version bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_current bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, 7468563));
  IF EXISTS (SELECT 1 FROM {s}.deleted_streams d
              WHERE d.stream_id = p_stream_id) THEN
    RETURN QUERY SELECT 'not_found'::text, 0::bigint;
    RETURN;
  END IF;
  SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM {s}.events e WHERE e.stream_id = p_stream_id;
  IF v_current = 0 THEN
    RETURN QUERY SELECT 'not_found'::text, 0::bigint;
    RETURN;
  END IF;
  IF (p_expected >= 0 AND v_current <> p_expected) THEN
    RETURN QUERY SELECT 'conflict'::text, v_current;
    RETURN;
  END IF;
  INSERT INTO {s}.deleted_streams (stream_id, version)
    VALUES (p_stream_id, v_current);
  RETURN QUERY SELECT 'ok'::text, v_current;
END
$fn$;
)sql"},
    {2, "append_group: group commit of single-event appends", R"sql(
-- Group commit (PostgresEventStoreOptions::group_commit_in_flight): many
-- single-event appends at exact versions, each to its stream, in one
-- statement. Each row is checked as by the store's exact-version fast path
-- (version p_expected exists, or is 0; the stream is not deleted); a row
-- whose version or event id is taken is skipped (ON CONFLICT DO NOTHING)
-- instead of failing the others, and its append takes the careful path.
-- Rows go in in stream order, so two groups never wait for each other in a
-- cycle. Returns the inserted rows.
--
-- A function only so that its plan can be generic: as a prepared statement,
-- PostgreSQL re-plans it on every call (its arrays make a custom plan look
-- cheaper), which doubled the CPU cost of an append. The version check is a
-- scalar subquery, not EXISTS, which PostgreSQL may turn into a hashed
-- subplan that reads the whole table.
CREATE FUNCTION {s}.append_group(p_streams text[], p_expected bigint[],
                                 p_ids uuid[], p_types text[],
                                 p_schema_versions integer[], p_data json[],
                                 p_meta json[])
RETURNS TABLE (o_id text, o_version bigint, o_position bigint, o_xid text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
  RETURN QUERY
  WITH ins AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT r.stream, r.expected + 1, r.id, r.type, r.v, r.data, r.meta
      FROM unnest(p_streams, p_expected, p_ids, p_types, p_schema_versions,
                  p_data, p_meta) AS r(stream, expected, id, type, v, data,
                                       meta)
     WHERE (r.expected = 0 OR (SELECT true FROM {s}.events e
                                WHERE e.stream_id = r.stream
                                  AND e.stream_version = r.expected LIMIT 1))
       AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d
                        WHERE d.stream_id = r.stream)
     ORDER BY r.stream
    ON CONFLICT DO NOTHING
    RETURNING event_id, stream_version, global_position, transaction_id
  )
  SELECT ins.event_id::text, ins.stream_version, ins.global_position,
         ins.transaction_id::text
    FROM ins;
END
$fn$;
)sql"},
    {3,
     "every append holds its stream's lock; appends keep stream order in "
     "the global order; deletes remove snapshots; snapshots kept as text",
     R"sql(
-- Snapshots are stored as given, like events (json keeps the text; jsonb
-- rewrote it: duplicate keys, key order, lone surrogates).
ALTER TABLE {s}.snapshots ALTER COLUMN state TYPE json USING state::text::json;

-- The one path of every append except grouped single-event appends
-- (append_group_v3). Replaces append_events and the lock-free INSERT
-- statements of migrations 1 and 2.
--
-- 1. Takes the stream's lock (transaction-scoped; the key is a hash of the
--    stream id seeded with the schema's name, so that event stores in other
--    schemas of the database never wait for each other): every writer of a stream
--    (this function, append_group_v3 and delete_stream) holds it from before
--    it reads the stream until its transaction ends, so a reader of the
--    stream inside the lock sees every earlier writer's commit, two writers
--    never race for a version, and a delete and an append never both pass.
-- 2. A retry: the first event id is stored already ('already_stored' when
--    every id is stored in this stream in this order, else 'id_conflict').
-- 3. Any other id stored already: 'id_conflict'.
-- 4. 'deleted'; 5. 'conflict' (the current version in last_version).
-- 6. 'stale_transaction': the stream's last event was committed by a
--    transaction newer than this one (which got its id earlier, for example
--    by writing something else first). Readers order events by transaction
--    id, so appending would put this stream's versions out of order in the
--    global order. Only a caller's own transaction can get here (a
--    transaction that had no id yet gets a newer one than everything it can
--    see); it must roll back and run again.
-- 7. Inserts the events: 'ok'.
CREATE FUNCTION {s}.append_v3(p_stream_id text, p_expected bigint,
                              p_ids uuid[], p_types text[],
                              p_schema_versions integer[], p_data json[],
                              p_meta json[], p_notify_channel text)
RETURNS TABLE (outcome text, first_version bigint, last_version bigint,
               tx xid8, last_position bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_count    integer := cardinality(p_ids);
  v_current  bigint;
  v_last_tx  xid8;
  v_first    bigint;
  v_matched  integer;
  v_stream   text;
  v_last     bigint;
  v_tx       xid8;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, hashtext('{s}')));

  SELECT e.stream_id, e.stream_version INTO v_stream, v_first
    FROM {s}.events e WHERE e.event_id = p_ids[1];
  IF FOUND THEN
    IF v_stream = p_stream_id THEN
      SELECT count(*) INTO v_matched
        FROM unnest(p_ids) WITH ORDINALITY AS n(id, i)
        JOIN {s}.events e ON e.event_id = n.id
       WHERE e.stream_id = p_stream_id
         AND e.stream_version = v_first + n.i - 1;
      IF v_matched = v_count THEN
        RETURN QUERY
          SELECT 'already_stored'::text, v_first, e.stream_version,
                 e.transaction_id, e.global_position
            FROM {s}.events e
           WHERE e.stream_id = p_stream_id
             AND e.stream_version = v_first + v_count - 1;
        RETURN;
      END IF;
    END IF;
    RETURN QUERY SELECT 'id_conflict'::text, 0::bigint, 0::bigint,
                        NULL::xid8, 0::bigint;
    RETURN;
  END IF;
  IF v_count > 1 AND EXISTS (SELECT 1 FROM {s}.events e
                              WHERE e.event_id = ANY (p_ids)) THEN
    RETURN QUERY SELECT 'id_conflict'::text, 0::bigint, 0::bigint,
                        NULL::xid8, 0::bigint;
    RETURN;
  END IF;

  IF EXISTS (SELECT 1 FROM {s}.deleted_streams d
              WHERE d.stream_id = p_stream_id) THEN
    RETURN QUERY SELECT 'deleted'::text, 0::bigint, 0::bigint, NULL::xid8,
                        0::bigint;
    RETURN;
  END IF;

  SELECT e.stream_version, e.transaction_id INTO v_current, v_last_tx
    FROM {s}.events e WHERE e.stream_id = p_stream_id
   ORDER BY e.stream_version DESC LIMIT 1;
  IF NOT FOUND THEN
    v_current := 0;
  END IF;
  IF (p_expected >= 0 AND v_current <> p_expected)
     OR (p_expected = -2 AND v_current = 0) THEN
    RETURN QUERY SELECT 'conflict'::text, 0::bigint, v_current, NULL::xid8,
                        0::bigint;
    RETURN;
  END IF;
  IF v_current > 0 AND v_last_tx > pg_current_xact_id_if_assigned() THEN
    RETURN QUERY SELECT 'stale_transaction'::text, 0::bigint, v_current,
                        NULL::xid8, 0::bigint;
    RETURN;
  END IF;

  WITH inserted AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT p_stream_id, v_current + n.i, n.id, n.type, n.v, n.data, n.meta
      FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_meta)
           WITH ORDINALITY AS n(id, type, v, data, meta, i)
     ORDER BY n.i
    RETURNING global_position, transaction_id
  )
  SELECT max(global_position), max(transaction_id) INTO v_last, v_tx
    FROM inserted;

  IF p_notify_channel <> '' THEN
    PERFORM pg_notify(p_notify_channel, v_tx::text || '.' || v_last::text);
  END IF;
  RETURN QUERY SELECT 'ok'::text, v_current + 1, v_current + v_count, v_tx,
                      v_last;
END
$fn$;

-- Group commit (PostgresEventStoreOptions::group_commit_in_flight): many
-- single-event appends at exact versions in one statement and one
-- transaction. Each row's stream lock is taken without waiting; a row whose
-- lock another writer holds, whose version or event id is taken, whose
-- expected version does not exist or whose stream is deleted is skipped,
-- and its append takes append_v3 on its own. The checks run in a statement
-- after the locks, so they see every commit of an earlier lock holder.
-- Returns the inserted rows (the caller maps them back by event id and
-- stream). A function so that its plan can be generic (see append_group).
CREATE FUNCTION {s}.append_group_v3(p_streams text[], p_expected bigint[],
                                    p_ids uuid[], p_types text[],
                                    p_schema_versions integer[],
                                    p_data json[], p_meta json[])
RETURNS TABLE (o_id text, o_stream text, o_version bigint, o_position bigint,
               o_xid text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
  v_locked bigint[];
BEGIN
  SELECT coalesce(array_agg(l.i), '{}') INTO v_locked
    FROM unnest(p_streams) WITH ORDINALITY AS l(stream, i)
   WHERE pg_try_advisory_xact_lock(hashtextextended(l.stream, hashtext('{s}')));

  RETURN QUERY
  WITH ins AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT r.stream, r.expected + 1, r.id, r.type, r.v, r.data, r.meta
      FROM unnest(p_streams, p_expected, p_ids, p_types, p_schema_versions,
                  p_data, p_meta) WITH ORDINALITY
           AS r(stream, expected, id, type, v, data, meta, i)
     WHERE r.i = ANY (v_locked)
       AND (r.expected = 0 OR (SELECT true FROM {s}.events e
                                WHERE e.stream_id = r.stream
                                  AND e.stream_version = r.expected LIMIT 1))
       AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d
                        WHERE d.stream_id = r.stream)
     ORDER BY r.i
    ON CONFLICT DO NOTHING
    RETURNING event_id, stream_id, stream_version, global_position,
              transaction_id
  )
  SELECT ins.event_id::text, ins.stream_id, ins.stream_version,
         ins.global_position, ins.transaction_id::text
    FROM ins;
END
$fn$;

-- A group of one (the common case on a store that is not busy): the same
-- as append_group_v3, without arrays.
CREATE FUNCTION {s}.append_one_v3(p_stream text, p_expected bigint,
                                  p_id uuid, p_type text,
                                  p_schema_version integer, p_data json,
                                  p_meta json)
RETURNS TABLE (o_version bigint, o_position bigint, o_xid text)
LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtextextended(p_stream,
                                                    hashtext('{s}'))) THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH ins AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT p_stream, p_expected + 1, p_id, p_type, p_schema_version, p_data,
           p_meta
     WHERE (p_expected = 0 OR EXISTS (SELECT 1 FROM {s}.events e
                                       WHERE e.stream_id = p_stream
                                         AND e.stream_version = p_expected))
       AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d
                        WHERE d.stream_id = p_stream)
    ON CONFLICT DO NOTHING
    RETURNING stream_version, global_position, transaction_id
  )
  SELECT ins.stream_version, ins.global_position, ins.transaction_id::text
    FROM ins;
END
$fn$;

-- Deleting a stream also deletes its snapshot (a deleted aggregate must not
-- come back from it). Same signature as migration 1's.
CREATE OR REPLACE FUNCTION {s}.delete_stream(p_stream_id text,
                                             p_expected bigint)
RETURNS TABLE (outcome text, version bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_current bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, hashtext('{s}')));
  IF EXISTS (SELECT 1 FROM {s}.deleted_streams d
              WHERE d.stream_id = p_stream_id) THEN
    RETURN QUERY SELECT 'not_found'::text, 0::bigint;
    RETURN;
  END IF;
  SELECT coalesce(max(e.stream_version), 0) INTO v_current
    FROM {s}.events e WHERE e.stream_id = p_stream_id;
  IF v_current = 0 THEN
    RETURN QUERY SELECT 'not_found'::text, 0::bigint;
    RETURN;
  END IF;
  IF (p_expected >= 0 AND v_current <> p_expected) THEN
    RETURN QUERY SELECT 'conflict'::text, v_current;
    RETURN;
  END IF;
  INSERT INTO {s}.deleted_streams (stream_id, version)
    VALUES (p_stream_id, v_current);
  DELETE FROM {s}.snapshots s WHERE s.stream_id = p_stream_id;
  RETURN QUERY SELECT 'ok'::text, v_current;
END
$fn$;
)sql"},
    {4,
     "group commit without ON CONFLICT: explicit checks, no speculative "
     "insertion",
     R"sql(
-- The same contract as migration 3's append_group_v3 and append_one_v3,
-- cheaper per row. ON CONFLICT DO NOTHING checked all three unique indexes
-- before each insert and inserted speculatively (a second WAL record per
-- row): 42% of the group statement's executor time. Under the stream's
-- lock, two index probes decide instead: the stream's last version is the
-- expected one (which also rules out a taken version), and the event id is
-- not stored. A row that fails either is skipped, as before, and its
-- append takes append_v3. The caller sends at most one append per stream
-- and per event id in a group; a unique violation that still happens (a
-- writer of an older build that takes no lock) fails the whole group, whose
-- appends then all take append_v3. Scalar subqueries, not EXISTS, which
-- PostgreSQL may turn into a hashed join that reads the whole table.
CREATE OR REPLACE FUNCTION {s}.append_group_v3(p_streams text[],
                                               p_expected bigint[],
                                               p_ids uuid[], p_types text[],
                                               p_schema_versions integer[],
                                               p_data json[], p_meta json[])
RETURNS TABLE (o_id text, o_stream text, o_version bigint, o_position bigint,
               o_xid text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
  v_locked bigint[];
BEGIN
  SELECT coalesce(array_agg(l.i), '{}') INTO v_locked
    FROM unnest(p_streams) WITH ORDINALITY AS l(stream, i)
   WHERE pg_try_advisory_xact_lock(hashtextextended(l.stream, hashtext('{s}')));

  RETURN QUERY
  WITH ins AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT r.stream, r.expected + 1, r.id, r.type, r.v, r.data, r.meta
      FROM unnest(p_streams, p_expected, p_ids, p_types, p_schema_versions,
                  p_data, p_meta) WITH ORDINALITY
           AS r(stream, expected, id, type, v, data, meta, i)
     WHERE r.i = ANY (v_locked)
       AND coalesce((SELECT e.stream_version FROM {s}.events e
                      WHERE e.stream_id = r.stream
                      ORDER BY e.stream_version DESC LIMIT 1), 0) = r.expected
       AND (SELECT true FROM {s}.events e WHERE e.event_id = r.id) IS NULL
       AND (SELECT true FROM {s}.deleted_streams d
             WHERE d.stream_id = r.stream) IS NULL
     ORDER BY r.i
    RETURNING event_id, stream_id, stream_version, global_position,
              transaction_id
  )
  SELECT ins.event_id::text, ins.stream_id, ins.stream_version,
         ins.global_position, ins.transaction_id::text
    FROM ins;
END
$fn$;

CREATE OR REPLACE FUNCTION {s}.append_one_v3(p_stream text, p_expected bigint,
                                             p_id uuid, p_type text,
                                             p_schema_version integer,
                                             p_data json, p_meta json)
RETURNS TABLE (o_version bigint, o_position bigint, o_xid text)
LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtextextended(p_stream,
                                                    hashtext('{s}'))) THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH ins AS (
    INSERT INTO {s}.events (stream_id, stream_version, event_id, event_type,
                            schema_version, data, metadata)
    SELECT p_stream, p_expected + 1, p_id, p_type, p_schema_version, p_data,
           p_meta
     WHERE coalesce((SELECT e.stream_version FROM {s}.events e
                      WHERE e.stream_id = p_stream
                      ORDER BY e.stream_version DESC LIMIT 1), 0) = p_expected
       AND NOT EXISTS (SELECT 1 FROM {s}.events e WHERE e.event_id = p_id)
       AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d
                        WHERE d.stream_id = p_stream)
    RETURNING stream_version, global_position, transaction_id
  )
  SELECT ins.stream_version, ins.global_position, ins.transaction_id::text
    FROM ins;
END
$fn$;
)sql"},
};

// Appends `text` to `out` as one element of a PostgreSQL array literal.
void AppendArrayElement(std::string& out, absl::string_view text) {
  if (out.size() > 1) out.push_back(',');  // out starts with "{"
  out.push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

// The events as the array literals append_v3 takes ($3..$7): separate
// columns, so that PostgreSQL parses each JSON document once.
struct EventArrays {
  std::string ids = "{", types = "{", versions = "{", data = "{",
              metadata = "{";
};

EventArrays ToArrays(const std::vector<NewEvent>& events) {
  EventArrays a;
  size_t bytes = 0;
  for (const NewEvent& e : events) bytes += e.data.size() + e.metadata.size();
  a.data.reserve(bytes + 8 * events.size());
  for (const NewEvent& e : events) {
    AppendArrayElement(a.ids, e.event_id);
    AppendArrayElement(a.types, e.event_type);
    AppendArrayElement(a.versions, absl::StrCat(e.schema_version));
    AppendArrayElement(a.data, e.data);
    AppendArrayElement(a.metadata, e.metadata);
  }
  for (std::string* s : {&a.ids, &a.types, &a.versions, &a.data, &a.metadata}) {
    s->push_back('}');
  }
  return a;
}

// The careful append and group commit: see append_v3 and append_group_v3
// in migration 3.
constexpr char kAppend[] =
    "SELECT outcome, first_version, last_version, tx::text, last_position "
    "FROM {s}.append_v3($1, $2, $3, $4, $5, $6, $7, $8)";
constexpr char kGroupAppend[] =
    "SELECT o_id, o_stream, o_version, o_position, o_xid FROM "
    "{s}.append_group_v3($1, $2, $3, $4, $5, $6, $7)";
constexpr char kOneAppend[] =
    "SELECT o_version, o_position, o_xid FROM "
    "{s}.append_one_v3($1, $2, $3, $4, $5, $6::json, $7::json)";

// The columns every event read returns, in this order. Converted columns
// get names of their own: an output column named like a table column would
// capture that name in ORDER BY (sorting xid8 as text, without the index).
constexpr char kEventColumns[] =
    "global_position, transaction_id::text AS xid_text, stream_id, "
    "stream_version, event_id::text AS id_text, event_type, schema_version, "
    "data::text AS data_text, metadata::text AS metadata_text, "
    "(date_part('epoch', recorded_at) * 1000000)::int8 AS recorded_us";

// Events whose transaction is older than every running transaction: nothing
// can commit before them any more (docs/event-store.md).
constexpr char kCommittedBeforeAllRunning[] =
    "transaction_id < pg_snapshot_xmin(pg_current_snapshot())";

uint64_t ParseXid(const pqxx::field& f) {
  uint64_t xid = 0;
  if (!absl::SimpleAtoi(absl::string_view(f.c_str(), f.size()), &xid)) {
    throw pqxx::conversion_error("transaction id out of range");
  }
  return xid;
}

RecordedEvent ToEvent(const pqxx::row& row) {
  RecordedEvent e;
  e.position.global_position = row[0].as<int64_t>();
  e.position.transaction_id = ParseXid(row[1]);
  e.stream_id.assign(row[2].c_str(), row[2].size());
  e.stream_version = row[3].as<int64_t>();
  e.event_id.assign(row[4].c_str(), row[4].size());
  e.event_type.assign(row[5].c_str(), row[5].size());
  e.schema_version = row[6].as<int>();
  e.data.assign(row[7].c_str(), row[7].size());
  e.metadata.assign(row[8].c_str(), row[8].size());
  e.recorded_at = absl::FromUnixMicros(row[9].as<int64_t>());
  return e;
}

ReadAllResult ToReadAllResult(const pqxx::result& rows, Position after) {
  ReadAllResult out;
  out.events.reserve(rows.size());
  for (const pqxx::row& row : rows) out.events.push_back(ToEvent(row));
  out.next = out.events.empty() ? after : out.events.back().position;
  return out;
}

}  // namespace

// SQL text of every statement, with the schema spliced in, and the names
// under which they are prepared on each connection.
class PostgresEventStore::Statements {
 public:
  explicit Statements(absl::string_view schema) {
    const std::string prefix = absl::StrCat("es_", schema, "_");
    auto add = [&](Statement& st, absl::string_view name,
                   absl::string_view sql) {
      st.name = absl::StrCat(prefix, name);
      st.sql = WithSchema(sql, schema);
    };
    add(append, "append3", kAppend);
    add(group_append, "append_group3", kGroupAppend);
    add(one_append, "append_one3", kOneAppend);
    add(read_forward, "read_fwd",
        absl::StrCat(
            "SELECT ", kEventColumns,
            " FROM {s}.events WHERE stream_id = $1 AND stream_version >= $2 "
            "AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d "
            "WHERE d.stream_id = $1) ORDER BY stream_version LIMIT $3"));
    add(read_backward, "read_bwd",
        absl::StrCat(
            "SELECT ", kEventColumns,
            " FROM {s}.events WHERE stream_id = $1 AND stream_version <= $2 "
            "AND NOT EXISTS (SELECT 1 FROM {s}.deleted_streams d "
            "WHERE d.stream_id = $1) ORDER BY stream_version DESC LIMIT $3"));
    add(read_all, "read_all",
        absl::StrCat("SELECT ", kEventColumns,
                     " FROM {s}.events WHERE (transaction_id, global_position)"
                     " > ($1::xid8, $2::int8) AND ",
                     kCommittedBeforeAllRunning,
                     " ORDER BY transaction_id, global_position LIMIT $3"));
    add(read_category, "read_cat",
        absl::StrCat("SELECT ", kEventColumns,
                     " FROM {s}.events WHERE split_part(stream_id, '-', 1) = "
                     "$4 AND (transaction_id, global_position) > ($1::xid8, "
                     "$2::int8) AND ",
                     kCommittedBeforeAllRunning,
                     " ORDER BY split_part(stream_id, '-', 1), "
                     "transaction_id, global_position LIMIT $3"));
    add(stream_info, "info",
        "SELECT coalesce(max(stream_version), 0), EXISTS (SELECT 1 FROM "
        "{s}.deleted_streams d WHERE d.stream_id = $1) FROM {s}.events "
        "WHERE stream_id = $1");
    add(delete_stream, "delete",
        "SELECT outcome, version FROM {s}.delete_stream($1, $2)");
    // Returns whether the stream is deleted (then nothing is saved).
    add(save_snapshot, "snap_save3",
        "WITH d AS (SELECT EXISTS (SELECT 1 FROM {s}.deleted_streams "
        "WHERE stream_id = $1) AS deleted), ins AS (INSERT INTO "
        "{s}.snapshots AS s (stream_id, stream_version, schema_version, "
        "state) SELECT $1, $2, $3, $4::json FROM d WHERE NOT d.deleted "
        "ON CONFLICT (stream_id) DO UPDATE SET stream_version = "
        "EXCLUDED.stream_version, schema_version = EXCLUDED.schema_version, "
        "state = EXCLUDED.state, created_at = now() "
        "WHERE s.stream_version <= EXCLUDED.stream_version) "
        "SELECT deleted FROM d");
    add(load_snapshot, "snap_load3",
        "SELECT stream_version, schema_version, state::text, "
        "(date_part('epoch', created_at) * 1000000)::int8 FROM {s}.snapshots "
        "WHERE stream_id = $1 AND NOT EXISTS (SELECT 1 FROM "
        "{s}.deleted_streams d WHERE d.stream_id = $1)");
    add(head, "head",
        absl::StrCat("SELECT transaction_id::text AS xid_text, "
                     "global_position FROM "
                     "{s}.events WHERE ",
                     kCommittedBeforeAllRunning,
                     " ORDER BY transaction_id DESC, global_position DESC "
                     "LIMIT 1"));
  }

  struct Statement {
    std::string name;
    std::string sql;
  };

  // Prepares `st` on `conn` unless it is already (libpqxx ignores a repeated
  // identical definition), and returns its name for exec_prepared.
  static const std::string& On(pqxx::connection_base& conn,
                               const Statement& st) {
    conn.prepare(st.name, st.sql);
    return st.name;
  }

  Statement append, group_append, one_append, read_forward, read_backward,
      read_all, read_category, stream_info, delete_stream, save_snapshot,
      load_snapshot, head;
};

int PostgresEventStore::LatestSchemaVersion() {
  return kMigrations[std::size(kMigrations) - 1].version;
}

std::string PostgresEventStore::NotificationChannel(absl::string_view schema) {
  return absl::StrCat(schema, "_events");
}

absl::Status PostgresEventStore::Migrate(PgPool& pool,
                                         absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<int> PostgresEventStore::SchemaVersion(
    PgPool& pool, absl::string_view schema) {
  return MigratedVersion(pool, schema, kComponent);
}

absl::StatusOr<std::unique_ptr<PostgresEventStore>> PostgresEventStore::Create(
    PgPool* pool, PostgresEventStoreOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(options.schema));
  ASSIGN_OR_RETURN(int version, SchemaVersion(*pool, options.schema));
  if (version < LatestSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "event store schema '", options.schema, "' is at version ", version,
        ", this build needs ", LatestSchemaVersion(), ": run the migration"));
  }
  return std::unique_ptr<PostgresEventStore>(
      new PostgresEventStore(pool, std::move(options)));
}

PostgresEventStore::PostgresEventStore(PgPool* pool,
                                       PostgresEventStoreOptions options)
    : pool_(pool),
      options_(std::move(options)),
      sql_(std::make_unique<Statements>(options_.schema)) {
  if (options_.notify == PostgresEventStoreOptions::Notify::kAfterCommit) {
    notifier_ = std::thread([this] { NotifierLoop(); });
  }
}

PostgresEventStore::~PostgresEventStore() {
  {
    absl::MutexLock lock(&notify_mu_);
    stopping_ = true;
  }
  if (notifier_.joinable()) notifier_.join();
}

void PostgresEventStore::SignalNotifier(Position position) {
  absl::MutexLock lock(&notify_mu_);
  if (!pending_notify_.has_value() || *pending_notify_ < position) {
    pending_notify_ = position;
  }
}

void PostgresEventStore::NotifierLoop() {
  const std::string channel = NotificationChannel(options_.schema);
  std::unique_ptr<pqxx::connection> conn;
  absl::Time last_sent = absl::InfinitePast();
  while (true) {
    // Rate limit: appends that commit meanwhile collect in pending_notify_.
    const absl::Duration wait =
        last_sent + options_.notify_min_interval - absl::Now();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    Position position;
    {
      absl::MutexLock lock(&notify_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(notify_mu_) {
        return stopping_ || pending_notify_.has_value();
      };
      notify_mu_.Await(absl::Condition(&ready));
      // Pending notifications are still sent when stopping, so that the
      // last appends of a process wake their readers.
      if (!pending_notify_.has_value()) return;
      position = *pending_notify_;
      pending_notify_.reset();
    }
    // A lost notification only delays subscribers until their next poll, so
    // a failure here is dropped after one reconnect attempt.
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        if (conn == nullptr || !conn->is_open() ||
            SessionEndedWhileIdle(*conn)) {
          conn = std::make_unique<pqxx::connection>(pool_->conninfo());
          // PostgreSQL gives a NOTIFY's transaction an xid, so its commit
          // would wait for a WAL flush while holding the global notify lock.
          // A notification is not durable anyway: don't wait.
          pqxx::nontransaction setup(*conn);
          setup.exec("SET synchronous_commit = off");
        }
        pqxx::nontransaction tx(*conn);
        tx.exec_params("SELECT pg_notify($1, $2)", channel, position.ToToken());
        last_sent = absl::Now();
        break;
      } catch (const std::exception&) {
        conn.reset();
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The operations, each on a transaction the caller provides: a
// nontransaction (autocommit) from the pool, or a caller's own transaction
// (InTransaction). They may throw libpqxx exceptions; callers translate them.

namespace {

using Statements = PostgresEventStore::Statements;

// The raw outcome of append_v3.
struct AppendRow {
  std::string outcome;
  AppendResult result;
};

AppendRow AppendOn(pqxx::transaction_base& tx, const Statements& sql,
                   const std::string& stream, const ExpectedVersion& expected,
                   const EventArrays& arrays, const std::string& channel) {
  pqxx::row row =
      tx.exec_prepared1(Statements::On(tx.conn(), sql.append), stream,
                        ToSqlExpected(expected), arrays.ids, arrays.types,
                        arrays.versions, arrays.data, arrays.metadata, channel);
  AppendRow out;
  out.outcome = row[0].as<std::string>();
  out.result.stream_id = stream;
  out.result.first_version = row[1].as<int64_t>();
  out.result.last_version = row[2].as<int64_t>();
  if (!row[3].is_null()) {
    out.result.position.transaction_id = ParseXid(row[3]);
    out.result.position.global_position = row[4].as<int64_t>();
  }
  return out;
}

absl::StatusOr<AppendResult> InterpretAppend(
    AppendRow row, absl::string_view stream_id, const ExpectedVersion& expected,
    const std::vector<NewEvent>& events) {
  if (row.outcome == "ok") return std::move(row.result);
  if (row.outcome == "already_stored") {
    row.result.already_stored = true;
    return std::move(row.result);
  }
  if (row.outcome == "conflict") {
    return eventstore_internal::VersionConflict(stream_id, expected,
                                                row.result.last_version);
  }
  if (row.outcome == "deleted") return StreamDeleted(stream_id);
  if (row.outcome == "id_conflict") {
    return eventstore_internal::EventIdConflict(events.front().event_id);
  }
  if (row.outcome == "stale_transaction") {
    return eventstore_internal::RetryTransaction(absl::StrCat(
        "stream '", stream_id,
        "' was appended to by a transaction that started after this one; "
        "roll this transaction back and run it again"));
  }
  return absl::InternalError(
      absl::StrCat("unexpected append outcome '", row.outcome, "'"));
}

// Which unique index an append's kAlreadyExists came from.
bool IsVersionTaken(const absl::Status& status) {
  return absl::IsAlreadyExists(status) &&
         absl::StrContains(status.message(), "events_stream_version_key");
}

std::vector<RecordedEvent> ReadStreamOn(pqxx::transaction_base& tx,
                                        const Statements& sql,
                                        const std::string& stream,
                                        Direction direction,
                                        int64_t from_version, int limit) {
  const auto& st =
      direction == Direction::kForward ? sql.read_forward : sql.read_backward;
  pqxx::result rows = tx.exec_prepared(Statements::On(tx.conn(), st), stream,
                                       from_version, limit);
  std::vector<RecordedEvent> events;
  events.reserve(rows.size());
  for (const pqxx::row& row : rows) events.push_back(ToEvent(row));
  return events;
}

ReadAllResult ReadAllOn(pqxx::transaction_base& tx, const Statements& sql,
                        Position after, int limit) {
  return ToReadAllResult(
      tx.exec_prepared(Statements::On(tx.conn(), sql.read_all),
                       std::to_string(after.transaction_id),
                       after.global_position, limit),
      after);
}

ReadAllResult ReadCategoryOn(pqxx::transaction_base& tx, const Statements& sql,
                             const std::string& category, Position after,
                             int limit) {
  return ToReadAllResult(
      tx.exec_prepared(Statements::On(tx.conn(), sql.read_category),
                       std::to_string(after.transaction_id),
                       after.global_position, limit, category),
      after);
}

// (version, deleted)
std::pair<int64_t, bool> StreamInfoOn(pqxx::transaction_base& tx,
                                      const Statements& sql,
                                      const std::string& stream) {
  pqxx::row row =
      tx.exec_prepared1(Statements::On(tx.conn(), sql.stream_info), stream);
  return {row[0].as<int64_t>(), row[1].as<bool>()};
}

absl::StatusOr<StreamInfo> ToStreamInfo(absl::string_view stream_id,
                                        std::pair<int64_t, bool> row) {
  if (row.second) return eventstore_internal::DeletedStreamNotFound(stream_id);
  if (row.first == 0) return StreamNotFound(stream_id);
  return StreamInfo{std::string(stream_id), row.first};
}

// (outcome, version)
std::pair<std::string, int64_t> DeleteOn(pqxx::transaction_base& tx,
                                         const Statements& sql,
                                         const std::string& stream,
                                         const ExpectedVersion& expected) {
  pqxx::row row =
      tx.exec_prepared1(Statements::On(tx.conn(), sql.delete_stream), stream,
                        ToSqlExpected(expected));
  return {row[0].as<std::string>(), row[1].as<int64_t>()};
}

absl::Status InterpretDelete(std::pair<std::string, int64_t> row,
                             absl::string_view stream_id,
                             const ExpectedVersion& expected) {
  if (row.first == "ok") return absl::OkStatus();
  if (row.first == "not_found") return StreamNotFound(stream_id);
  return eventstore_internal::VersionConflict(stream_id, expected, row.second);
}

// Returns false (and saves nothing) when the stream is deleted.
bool SaveSnapshotOn(pqxx::transaction_base& tx, const Statements& sql,
                    const Snapshot& snapshot) {
  return !tx.exec_prepared1(Statements::On(tx.conn(), sql.save_snapshot),
                            snapshot.stream_id, snapshot.stream_version,
                            snapshot.schema_version, snapshot.state)[0]
              .as<bool>();
}

std::optional<Snapshot> LoadSnapshotOn(pqxx::transaction_base& tx,
                                       const Statements& sql,
                                       const std::string& stream) {
  pqxx::result rows =
      tx.exec_prepared(Statements::On(tx.conn(), sql.load_snapshot), stream);
  if (rows.empty()) return std::nullopt;
  Snapshot snapshot;
  snapshot.stream_id = stream;
  snapshot.stream_version = rows[0][0].as<int64_t>();
  snapshot.schema_version = rows[0][1].as<int>();
  snapshot.state = rows[0][2].as<std::string>();
  snapshot.created_at = absl::FromUnixMicros(rows[0][3].as<int64_t>());
  return snapshot;
}

Position HeadOn(pqxx::transaction_base& tx, const Statements& sql) {
  pqxx::result rows = tx.exec_prepared(Statements::On(tx.conn(), sql.head));
  if (rows.empty()) return Position::Start();
  return Position{ParseXid(rows[0][0]), rows[0][1].as<int64_t>()};
}

// Runs `fn` (which may throw) and translates exceptions.
template <typename Fn>
absl::Status TranslateExceptions(Fn&& fn) {
  try {
    return fn();
  } catch (...) {
    return StatusFromCurrentPgException();
  }
}

}  // namespace

// An EventStore on a transaction that its creator owns.
class PostgresEventStore::TransactionStore
    : public PostgresEventStore::TransactionEventStore {
 public:
  TransactionStore(pqxx::transaction_base& tx, const PostgresEventStore& owner)
      : tx_(tx), owner_(owner) {}

  absl::StatusOr<AppendResult> Append(absl::string_view stream_id,
                                      ExpectedVersion expected,
                                      std::vector<NewEvent> events) override {
    RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
    RETURN_IF_ERROR(eventstore_internal::ValidateAppend(stream_id, events));
    const std::string stream(stream_id);
    const EventArrays arrays = ToArrays(events);
    AppendRow row;
    absl::Status status = Translate([&] {
      row = AppendOn(tx_, *owner_.sql_, stream, expected, arrays,
                     owner_.InTransactionChannel());
      return absl::OkStatus();
    });
    if (IsVersionTaken(status)) {
      // Every writer takes the stream's lock before it reads, so only a
      // writer that does not (a process of an older build) or a snapshot
      // older than the lock (REPEATABLE READ) gets here. PostgreSQL aborted
      // the transaction; a new one sees the winner and decides again.
      failure_ = eventstore_internal::RetryTransaction(absl::StrCat(
          "stream '", stream_id,
          "' was appended to concurrently; run the transaction again"));
      return failure_;
    }
    if (absl::IsAlreadyExists(status)) {
      // Another stream's concurrent append stored one of these ids.
      return eventstore_internal::EventIdConflict(events.front().event_id);
    }
    RETURN_IF_ERROR(status);
    const bool fresh = row.outcome == "ok";
    absl::StatusOr<AppendResult> result =
        InterpretAppend(std::move(row), stream_id, expected, events);
    if (MustRetryTransaction(result.status()) && failure_.ok()) {
      failure_ = result.status();
    }
    if (fresh && result.ok()) {
      appended_events_ += result->last_version - result->first_version + 1;
      if (!last_appended_.has_value() || *last_appended_ < result->position) {
        last_appended_ = result->position;
      }
    }
    return result;
  }

  int64_t appended_events() const override { return appended_events_; }
  std::optional<Position> last_appended() const override {
    return last_appended_;
  }
  absl::Status failure() const override { return failure_; }
  bool InCallersTransaction() const override { return true; }

  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream_id, Direction direction, int64_t from_version,
      int limit) override {
    RETURN_IF_ERROR(ValidateStreamId(stream_id));
    RETURN_IF_ERROR(ValidateLimit(limit));
    const std::string stream(stream_id);
    std::vector<RecordedEvent> events;
    std::pair<int64_t, bool> info{1, false};
    RETURN_IF_ERROR(Translate([&] {
      events = ReadStreamOn(tx_, *owner_.sql_, stream, direction, from_version,
                            limit);
      if (events.empty()) info = StreamInfoOn(tx_, *owner_.sql_, stream);
      return absl::OkStatus();
    }));
    RETURN_IF_ERROR(ToStreamInfo(stream_id, info).status());
    return events;
  }

  absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) override {
    RETURN_IF_ERROR(ValidateLimit(limit));
    ReadAllResult result;
    RETURN_IF_ERROR(Translate([&] {
      result = ReadAllOn(tx_, *owner_.sql_, after, limit);
      return absl::OkStatus();
    }));
    return result;
  }

  absl::StatusOr<ReadAllResult> ReadCategory(absl::string_view category,
                                             Position after,
                                             int limit) override {
    RETURN_IF_ERROR(ValidateStreamId(category));
    RETURN_IF_ERROR(ValidateLimit(limit));
    ReadAllResult result;
    RETURN_IF_ERROR(Translate([&] {
      result = ReadCategoryOn(tx_, *owner_.sql_, std::string(category), after,
                              limit);
      return absl::OkStatus();
    }));
    return result;
  }

  absl::StatusOr<StreamInfo> GetStreamInfo(
      absl::string_view stream_id) override {
    RETURN_IF_ERROR(ValidateStreamId(stream_id));
    std::pair<int64_t, bool> info;
    RETURN_IF_ERROR(Translate([&] {
      info = StreamInfoOn(tx_, *owner_.sql_, std::string(stream_id));
      return absl::OkStatus();
    }));
    return ToStreamInfo(stream_id, info);
  }

  absl::Status DeleteStream(absl::string_view stream_id,
                            ExpectedVersion expected) override {
    RETURN_IF_ERROR(ValidateStreamId(stream_id));
    RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
    std::pair<std::string, int64_t> row;
    RETURN_IF_ERROR(Translate([&] {
      row = DeleteOn(tx_, *owner_.sql_, std::string(stream_id), expected);
      return absl::OkStatus();
    }));
    return InterpretDelete(std::move(row), stream_id, expected);
  }

  // In a savepoint of its own: a snapshot is an optimization, and its
  // failure (a deadlock, a lock or statement timeout) must not abort the
  // caller's transaction, whose events it would take with it.
  absl::Status SaveSnapshot(const Snapshot& snapshot) override {
    RETURN_IF_ERROR(eventstore_internal::ValidateSnapshot(snapshot));
    const bool autocommit = dynamic_cast<pqxx::dbtransaction*>(&tx_) == nullptr;
    bool saved = false;
    auto save = [&](pqxx::transaction_base& tx) {
      saved = SaveSnapshotOn(tx, *owner_.sql_, snapshot);
      return absl::OkStatus();
    };
    bool lost = false;
    absl::Status status = autocommit
                              ? TranslateExceptions([&] { return save(tx_); })
                              : InSavepoint(tx_, save, &lost);
    // Without the savepoint undone (a broken connection), the transaction
    // is lost.
    if (lost && failure_.ok()) failure_ = status;
    RETURN_IF_ERROR(status);
    if (!saved) return StreamDeleted(snapshot.stream_id);
    return absl::OkStatus();
  }

  absl::StatusOr<Snapshot> LoadSnapshot(absl::string_view stream_id) override {
    RETURN_IF_ERROR(ValidateStreamId(stream_id));
    std::optional<Snapshot> snapshot;
    RETURN_IF_ERROR(Translate([&] {
      snapshot = LoadSnapshotOn(tx_, *owner_.sql_, std::string(stream_id));
      return absl::OkStatus();
    }));
    if (!snapshot.has_value())
      return eventstore_internal::NoSnapshot(stream_id);
    return *std::move(snapshot);
  }

  absl::StatusOr<Position> HeadPosition() override {
    Position head;
    RETURN_IF_ERROR(Translate([&] {
      head = HeadOn(tx_, *owner_.sql_);
      return absl::OkStatus();
    }));
    return head;
  }

 private:
  // Runs `fn` (which may throw) and translates exceptions; any exception
  // means PostgreSQL aborted the transaction.
  template <typename Fn>
  absl::Status Translate(Fn&& fn) {
    absl::Status status = TranslateExceptions(std::forward<Fn>(fn));
    if (!status.ok() && failure_.ok()) failure_ = status;
    return status;
  }

  pqxx::transaction_base& tx_;
  const PostgresEventStore& owner_;
  std::optional<Position> last_appended_;
  int64_t appended_events_ = 0;
  // The first error after which the transaction cannot commit.
  absl::Status failure_;
};

std::unique_ptr<PostgresEventStore::TransactionEventStore>
PostgresEventStore::InTransaction(pqxx::transaction_base& tx) const {
  return std::make_unique<TransactionStore>(tx, *this);
}

void PostgresEventStore::NotifyCommitted(Position position, int64_t events) {
  if (options_.events_appended != nullptr && events > 0) {
    options_.events_appended->Increment(static_cast<double>(events));
  }
  if (options_.notify == PostgresEventStoreOptions::Notify::kAfterCommit) {
    SignalNotifier(position);
  }
  absl::ReaderMutexLock lock(&observers_mu_);
  for (const auto& [id, observer] : observers_) observer(position);
}

int PostgresEventStore::AddCommitObserver(
    std::function<void(Position)> observer) {
  absl::MutexLock lock(&observers_mu_);
  observers_.emplace_back(next_observer_id_, std::move(observer));
  return next_observer_id_++;
}

void PostgresEventStore::RemoveCommitObserver(int id) {
  absl::MutexLock lock(&observers_mu_);
  observers_.erase(
      std::remove_if(observers_.begin(), observers_.end(),
                     [id](const auto& o) { return o.first == id; }),
      observers_.end());
}

std::string PostgresEventStore::InTransactionChannel() const {
  return options_.notify == PostgresEventStoreOptions::Notify::kInTransaction
             ? NotificationChannel(options_.schema)
             : std::string();
}

struct PostgresEventStore::GroupedAppend {
  enum class Outcome { kPending, kInserted, kCareful };
  const std::string* stream = nullptr;
  int64_t expected = 0;
  const NewEvent* event = nullptr;
  // Written by the group's leader; read by the appender once `outcome` is
  // no longer kPending (which is written under group_mu_).
  Outcome outcome = Outcome::kPending;
  int64_t version = 0;
  Position position;
};

int PostgresEventStore::grouped_appends_waiting() const {
  absl::MutexLock lock(&group_mu_);
  return static_cast<int>(group_queue_.size());
}

void PostgresEventStore::AppendGrouped(GroupedAppend* g) {
  using Outcome = GroupedAppend::Outcome;
  absl::MutexLock lock(&group_mu_);
  group_queue_.push_back(g);
  while (true) {
    auto done_or_can_lead = [this,
                             g]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(group_mu_) {
      return g->outcome != Outcome::kPending ||
             (groups_in_flight_ < options_.group_commit_in_flight &&
              !group_queue_.empty());
    };
    group_mu_.Await(absl::Condition(&done_or_can_lead));
    if (g->outcome != Outcome::kPending) return;
    // Lead a group: whatever is queued, oldest first (not necessarily g).
    const size_t n = std::min(
        group_queue_.size(),
        static_cast<size_t>(std::max(1, options_.group_commit_max_events)));
    std::vector<GroupedAppend*> group(group_queue_.begin(),
                                      group_queue_.begin() + n);
    group_queue_.erase(group_queue_.begin(), group_queue_.begin() + n);
    ++groups_in_flight_;
    group_mu_.Unlock();
    std::vector<bool> inserted(group.size(), false);
    WriteGroup(group, &inserted);
    group_mu_.Lock();
    --groups_in_flight_;
    for (size_t i = 0; i < group.size(); ++i) {
      group[i]->outcome = inserted[i] ? Outcome::kInserted : Outcome::kCareful;
    }
  }
}

void PostgresEventStore::WriteGroup(const std::vector<GroupedAppend*>& group,
                                    std::vector<bool>* inserted) {
  // Any error leaves every append not inserted: each then runs on its own
  // and meets (or reports) the problem itself.
  if (group.size() == 1) {
    GroupedAppend& g = *group[0];
    pool_
        ->Run(PgPool::Retry::kOnBrokenConnection,
              [&](pqxx::connection& conn) {
                pqxx::nontransaction tx(conn);
                const pqxx::result rows = tx.exec_prepared(
                    Statements::On(conn, sql_->one_append), *g.stream,
                    g.expected, g.event->event_id, g.event->event_type,
                    g.event->schema_version, g.event->data, g.event->metadata);
                if (rows.size() != 1) return absl::OkStatus();
                g.version = rows[0][0].as<int64_t>();
                g.position.global_position = rows[0][1].as<int64_t>();
                g.position.transaction_id = ParseXid(rows[0][2]);
                (*inserted)[0] = true;
                return absl::OkStatus();
              })
        .IgnoreError();
    return;
  }
  EventArrays arrays;
  std::string streams = "{", expected = "{";
  // Inserted rows come back by (event id, stream): each reaches its own
  // append, whatever the database's collation.
  absl::flat_hash_map<std::pair<absl::string_view, absl::string_view>, size_t>
      index;
  // At most one append per stream and per event id goes into the statement
  // (append_group_v3 relies on it): a second one could only be skipped
  // there, so it takes the careful path right away.
  absl::flat_hash_set<absl::string_view> streams_seen, ids_seen;
  for (size_t i = 0; i < group.size(); ++i) {
    const GroupedAppend& g = *group[i];
    if (!streams_seen.insert(*g.stream).second ||
        !ids_seen.insert(g.event->event_id).second) {
      continue;
    }
    AppendArrayElement(streams, *g.stream);
    AppendArrayElement(expected, absl::StrCat(g.expected));
    AppendArrayElement(arrays.ids, g.event->event_id);
    AppendArrayElement(arrays.types, g.event->event_type);
    AppendArrayElement(arrays.versions, absl::StrCat(g.event->schema_version));
    AppendArrayElement(arrays.data, g.event->data);
    AppendArrayElement(arrays.metadata, g.event->metadata);
    index.emplace(std::make_pair(absl::string_view(g.event->event_id),
                                 absl::string_view(*g.stream)),
                  i);
  }
  for (std::string* a : {&streams, &expected, &arrays.ids, &arrays.types,
                         &arrays.versions, &arrays.data, &arrays.metadata}) {
    a->push_back('}');
  }
  pool_
      ->Run(PgPool::Retry::kOnBrokenConnection,
            [&](pqxx::connection& conn) {
              // One autocommitted statement: one round trip. (A
              // transaction whose COMMIT went out apart, so that the next
              // group could execute during this one's WAL flush, cost two
              // more round trips per group and made smaller groups:
              // bench/results.md, issue 19, session 7.)
              pqxx::nontransaction tx(conn);
              const pqxx::result rows = tx.exec_prepared(
                  Statements::On(conn, sql_->group_append), streams, expected,
                  arrays.ids, arrays.types, arrays.versions, arrays.data,
                  arrays.metadata);
              std::vector<size_t> stored;
              stored.reserve(rows.size());
              for (const pqxx::row& row : rows) {
                auto it = index.find(std::make_pair(
                    absl::string_view(row[0].c_str(), row[0].size()),
                    absl::string_view(row[1].c_str(), row[1].size())));
                if (it == index.end()) continue;
                GroupedAppend& g = *group[it->second];
                g.version = row[2].as<int64_t>();
                g.position.global_position = row[3].as<int64_t>();
                g.position.transaction_id = ParseXid(row[4]);
                stored.push_back(it->second);
              }
              for (size_t i : stored) (*inserted)[i] = true;
              return absl::OkStatus();
            })
      .IgnoreError();
}

absl::StatusOr<AppendResult> PostgresEventStore::Append(
    absl::string_view stream_id, ExpectedVersion expected,
    std::vector<NewEvent> events) {
  RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
  RETURN_IF_ERROR(eventstore_internal::ValidateAppend(stream_id, events));
  const std::string stream(stream_id);
  const std::string channel = InTransactionChannel();
  AppendRow row;
  bool grouped = false;
  if (options_.group_commit_in_flight > 0 && events.size() == 1 &&
      channel.empty() && ToSqlExpected(expected) >= 0) {
    GroupedAppend g;
    g.stream = &stream;
    g.expected = ToSqlExpected(expected);
    g.event = &events[0];
    AppendGrouped(&g);
    if (g.outcome == GroupedAppend::Outcome::kInserted) {
      grouped = true;
      row.outcome = "ok";
      row.result.stream_id = stream;
      row.result.first_version = row.result.last_version = g.version;
      row.result.position = g.position;
    }
  }
  // The careful path (append_v3), which classifies every outcome under the
  // stream's lock. Event ids are fixed before the first attempt, so
  // repeating it on a fresh connection is an idempotent retry. A writer that
  // does not take the stream's lock (a process of an older build) can still
  // take a version first; each such loss means another append succeeded,
  // and the next attempt sees it.
  if (!grouped) {
    const EventArrays arrays = ToArrays(events);
    for (int attempt = 0;; ++attempt) {
      absl::Status status = pool_->Run(
          PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
            pqxx::nontransaction tx(conn);
            row = AppendOn(tx, *sql_, stream, expected, arrays, channel);
            return absl::OkStatus();
          });
      if (IsVersionTaken(status) && attempt < 100) continue;
      if (absl::IsAlreadyExists(status)) {
        // A concurrent append to another stream stored one of these ids.
        return eventstore_internal::EventIdConflict(events.front().event_id);
      }
      RETURN_IF_ERROR(status);
      break;
    }
  }
  const bool fresh = row.outcome == "ok";
  absl::StatusOr<AppendResult> result =
      InterpretAppend(std::move(row), stream_id, expected, events);
  // Also for already_stored: the first attempt may have committed without
  // its notification being sent (a connection lost after the commit).
  if (result.ok()) {
    NotifyCommitted(
        result->position,
        fresh ? result->last_version - result->first_version + 1 : 0);
  }
  return result;
}

absl::StatusOr<std::vector<RecordedEvent>> PostgresEventStore::ReadStream(
    absl::string_view stream_id, Direction direction, int64_t from_version,
    int limit) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  RETURN_IF_ERROR(ValidateLimit(limit));
  const std::string stream(stream_id);
  std::vector<RecordedEvent> events;
  // An empty range of an existing stream is not an error; a missing or
  // deleted stream is.
  std::pair<int64_t, bool> info{1, false};
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        events =
            ReadStreamOn(tx, *sql_, stream, direction, from_version, limit);
        if (events.empty()) info = StreamInfoOn(tx, *sql_, stream);
        return absl::OkStatus();
      }));
  RETURN_IF_ERROR(ToStreamInfo(stream_id, info).status());
  return events;
}

absl::StatusOr<ReadAllResult> PostgresEventStore::ReadAll(Position after,
                                                          int limit) {
  RETURN_IF_ERROR(ValidateLimit(limit));
  ReadAllResult result;
  RETURN_IF_ERROR(pool_->Run(PgPool::Retry::kOnBrokenConnection,
                             [&](pqxx::connection& conn) {
                               pqxx::nontransaction tx(conn);
                               result = ReadAllOn(tx, *sql_, after, limit);
                               return absl::OkStatus();
                             }));
  return result;
}

absl::StatusOr<ReadAllResult> PostgresEventStore::ReadCategory(
    absl::string_view category, Position after, int limit) {
  RETURN_IF_ERROR(ValidateStreamId(category));
  RETURN_IF_ERROR(ValidateLimit(limit));
  ReadAllResult result;
  const std::string cat(category);
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        result = ReadCategoryOn(tx, *sql_, cat, after, limit);
        return absl::OkStatus();
      }));
  return result;
}

absl::StatusOr<StreamInfo> PostgresEventStore::GetStreamInfo(
    absl::string_view stream_id) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  std::pair<int64_t, bool> info;
  const std::string stream(stream_id);
  RETURN_IF_ERROR(pool_->Run(PgPool::Retry::kOnBrokenConnection,
                             [&](pqxx::connection& conn) {
                               pqxx::nontransaction tx(conn);
                               info = StreamInfoOn(tx, *sql_, stream);
                               return absl::OkStatus();
                             }));
  return ToStreamInfo(stream_id, info);
}

absl::Status PostgresEventStore::DeleteStream(absl::string_view stream_id,
                                              ExpectedVersion expected) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
  std::pair<std::string, int64_t> row;
  const std::string stream(stream_id);
  RETURN_IF_ERROR(
      pool_->Run(PgPool::Retry::kNever, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        row = DeleteOn(tx, *sql_, stream, expected);
        return absl::OkStatus();
      }));
  return InterpretDelete(std::move(row), stream_id, expected);
}

absl::Status PostgresEventStore::SaveSnapshot(const Snapshot& snapshot) {
  RETURN_IF_ERROR(eventstore_internal::ValidateSnapshot(snapshot));
  bool saved = false;
  RETURN_IF_ERROR(pool_->Run(PgPool::Retry::kOnBrokenConnection,
                             [&](pqxx::connection& conn) {
                               pqxx::nontransaction tx(conn);
                               saved = SaveSnapshotOn(tx, *sql_, snapshot);
                               return absl::OkStatus();
                             }));
  if (!saved) return StreamDeleted(snapshot.stream_id);
  return absl::OkStatus();
}

absl::StatusOr<Snapshot> PostgresEventStore::LoadSnapshot(
    absl::string_view stream_id) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  std::optional<Snapshot> snapshot;
  const std::string stream(stream_id);
  RETURN_IF_ERROR(pool_->Run(PgPool::Retry::kOnBrokenConnection,
                             [&](pqxx::connection& conn) {
                               pqxx::nontransaction tx(conn);
                               snapshot = LoadSnapshotOn(tx, *sql_, stream);
                               return absl::OkStatus();
                             }));
  if (!snapshot.has_value()) return eventstore_internal::NoSnapshot(stream_id);
  return *std::move(snapshot);
}

absl::StatusOr<Position> PostgresEventStore::HeadPosition() {
  Position head;
  RETURN_IF_ERROR(pool_->Run(PgPool::Retry::kOnBrokenConnection,
                             [&](pqxx::connection& conn) {
                               pqxx::nontransaction tx(conn);
                               head = HeadOn(tx, *sql_);
                               return absl::OkStatus();
                             }));
  return head;
}

absl::StatusOr<Position> PostgresEventStore::PositionBefore(absl::Time time) {
  std::optional<Position> before;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        // Events of one transaction share recorded_at (its start), so the
        // first one found is the first of its transaction too.
        const pqxx::result rows = tx.exec_params(
            absl::StrCat("SELECT transaction_id::text AS xid_text, "
                         "global_position FROM ",
                         options_.schema,
                         ".events WHERE recorded_at >= timestamptz 'epoch' + "
                         "$1::int8 * interval '1 microsecond' ORDER BY "
                         "transaction_id, "
                         "global_position LIMIT 1"),
            absl::ToUnixMicros(time));
        if (!rows.empty()) {
          before = Position{ParseXid(rows[0][0]), rows[0][1].as<int64_t>() - 1};
        }
        return absl::OkStatus();
      }));
  if (before.has_value()) return *before;
  return HeadPosition();
}

// ---------------------------------------------------------------------------
// ChangeListener

struct ChangeListener::State {
  std::unique_ptr<PgListener> listener;
};

absl::StatusOr<std::unique_ptr<ChangeListener>> ChangeListener::Create(
    std::string conninfo, absl::string_view schema) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  auto state = std::make_unique<State>();
  ASSIGN_OR_RETURN(
      state->listener,
      PgListener::Create(conninfo,
                         PostgresEventStore::NotificationChannel(schema),
                         absl::StrCat("cqrs listener ", schema)));
  return std::unique_ptr<ChangeListener>(new ChangeListener(std::move(state)));
}

ChangeListener::ChangeListener(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

ChangeListener::~ChangeListener() = default;

absl::StatusOr<std::optional<Position>> ChangeListener::Wait(
    absl::Duration timeout) {
  ASSIGN_OR_RETURN(std::vector<std::string> payloads,
                   state_->listener->Wait(timeout));
  std::optional<Position> newest;
  for (const std::string& payload : payloads) {
    absl::StatusOr<Position> p = Position::FromToken(payload);
    // Payloads that are not tokens still mean "something changed".
    const Position position = p.ok() ? *p : Position::Start();
    if (!newest.has_value() || *newest < position) newest = position;
  }
  return newest;
}

int ChangeListener::BackendPid() const {
  return state_->listener->BackendPid();
}

}  // namespace cqrs::eventstore
