// Query handlers' SQL and JSON: `{table}` placeholders (ExpandTables, at
// QueryService::Add() and per request), rows written as JSON by column type
// (queries/json_rows.h), and QueryContext's One / Many / Page responses,
// directly and through a QueryService against the test PostgreSQL.
#include "queries/query_context.h"

#include <future>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "projections/runner.h"
#include "queries/json_rows.h"
#include "queries/pagination.h"
#include "queries/progress_tracker.h"
#include "queries/query_service.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"

namespace cqrs::queries {
namespace {

rapidjson::Document Parse(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseFullPrecisionFlag>(text.data(), text.size());
  INFO(text);
  REQUIRE(!doc.HasParseError());
  return doc;
}

std::string ErrorCodeOfBody(const std::string& body) {
  rapidjson::Document doc = Parse(body);
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["code"].GetString();
}

http::Request Get(const std::string& target) {
  auto request = http::Request::Create("GET", target, {}, "");
  REQUIRE(request.ok());
  return *std::move(request);
}

TEST_CASE("placeholders expand to the schema's views", "[queries]") {
  auto sql = ExpandTables(
      "SELECT v FROM {counter_values} c JOIN {t_2} USING (id) WHERE id = $1",
      "app");
  REQUIRE(sql.ok());
  CHECK(*sql ==
        "SELECT v FROM app.counter_values c JOIN app.t_2 USING (id) WHERE "
        "id = $1");

  // Keywords are quoted, in the schema and the table.
  CHECK(*ExpandTables("FROM {order}", "user") == R"(FROM "user"."order")");
  CHECK(*ExpandTables("FROM {all}", "with") == R"(FROM "with"."all")");
  CHECK(*ExpandTables("FROM {orders}", "users") == "FROM users.orders");

  // Literal braces are doubled; SQL without braces needs no schema.
  CHECK(*ExpandTables("SELECT '{{1,2}}'::int[], '{{\"a\": 1}}'::json", "") ==
        R"(SELECT '{1,2}'::int[], '{"a": 1}'::json)");
  CHECK(*ExpandTables("SELECT 1", "") == "SELECT 1");

  for (const char* bad :
       {"FROM {Counter}", "FROM {a b}", "FROM {}", "FROM {1x}", "FROM {a.b}",
        "FROM {x", "FROM x}", "SELECT '{1,2}'::int[]", "FROM {{x}"}) {
    INFO(bad);
    auto r = ExpandTables(bad, "app");
    REQUIRE(!r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  }
  auto unknown = ExpandTables("FROM {no such}", "app");
  CHECK(absl::StrContains(unknown.status().message(),
                          "unknown placeholder {no such}"));
  auto no_schema = ExpandTables("FROM {things}", "");
  REQUIRE(!no_schema.ok());
  CHECK(absl::StrContains(no_schema.status().message(),
                          "QueryServiceOptions::schema"));
}

TEST_CASE("statement parameters are text or NULL", "[queries]") {
  SqlParams params = {"a",
                      absl::string_view("b"),
                      std::string("c"),
                      int64_t{-9},
                      7u,
                      true,
                      std::nullopt};
  CHECK(*params[0].value() == "a");
  CHECK(*params[1].value() == "b");
  CHECK(*params[2].value() == "c");
  CHECK(*params[3].value() == "-9");
  CHECK(*params[4].value() == "7");
  CHECK(*params[5].value() == "true");
  CHECK(!params[6].value().has_value());
}

// One row of `sql` from a fresh session in `time_zone`.
pqxx::result Select(testing::TestSchema& schema, const std::string& sql,
                    const std::string& time_zone = "UTC") {
  pqxx::connection conn(schema.url());
  pqxx::nontransaction tx(conn);
  tx.exec(absl::StrCat("SET TimeZone = '", time_zone, "'"));
  return tx.exec(sql);
}

TEST_CASE("rows are written as JSON by column type", "[queries][pg]") {
  testing::TestSchema schema;
  const pqxx::result rows = Select(
      schema,
      "SELECT 1::int2 AS i2, (-2147483648)::int4 AS i4, "
      "  9223372036854775807::int8 AS i8, "
      "  123456789012345678901234567890.000100::numeric AS big, "
      "  (-0.5)::numeric AS neg, 1.5::float4 AS f4, 1e300::float8 AS f8, "
      "  true AS yes, false AS no, 'x'::varchar AS vc, 'ab'::char(4) AS bp, "
      "  'nm'::name AS nm, "
      "  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, "
      "  '{\"a\": [1, 2.50, 123456789012345678901234567890], "
      "    \"b\": {\"c\": null}}'::json AS j, "
      "  '{\"k\": \"v\"}'::jsonb AS jb, "
      "  '2024-05-01 14:00:00.25+02'::timestamptz AS ts, "
      "  '2024-05-01 14:00:00'::timestamp AS ts_local, "
      "  '2024-02-29'::date AS d, NULL::text AS n, 42::oid AS o, "
      "  ARRAY[1, 2] AS arr",
      "Asia/Kolkata");
  auto json = RowToJson(rows[0]);
  REQUIRE(json.ok());
  CHECK(*json ==
        R"({"i2":1,"i4":-2147483648,"i8":9223372036854775807,)"
        R"("big":123456789012345678901234567890.000100,"neg":-0.5,)"
        R"("f4":1.5,"f8":1e+300,"yes":true,"no":false,"vc":"x",)"
        R"("bp":"ab  ","nm":"nm","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",)"
        R"("j":{"a":[1,2.50,123456789012345678901234567890],"b":{"c":null}},)"
        R"("jb":{"k":"v"},"ts":"2024-05-01T12:00:00.250000Z",)"
        R"("ts_local":"2024-05-01T14:00:00.000000Z","d":"2024-02-29",)"
        R"("n":null,"o":"42","arr":"{1,2}"})");
  // And it is JSON of those types.
  rapidjson::Document doc = Parse(*json);
  CHECK(doc["i8"].IsInt64());
  CHECK(doc["i8"].GetInt64() == 9223372036854775807);
  CHECK(doc["big"].IsNumber());
  CHECK(doc["yes"].IsBool());
  CHECK(doc["j"]["a"][2].IsNumber());
  CHECK(doc["n"].IsNull());

  // Absent instead of null.
  auto omitted = RowToJson(rows[0], kOmitNullColumns);
  REQUIRE(omitted.ok());
  CHECK(!Parse(*omitted).HasMember("n"));
  CHECK(Parse(*omitted).HasMember("i2"));
}

TEST_CASE("timestamptz is written in UTC from any session time zone",
          "[queries][pg]") {
  testing::TestSchema schema;
  struct Case {
    const char* zone;
    const char* value;
    const char* want;
  };
  for (const Case& c : {
           // Across a leap day, backwards.
           Case{"America/New_York", "2024-03-01 02:00:00+00",
                "2024-03-01T02:00:00.000000Z"},
           // Local mean time: an offset in seconds (+00:19:32).
           Case{"Europe/Amsterdam", "1900-01-01 00:00:00.000001+00",
                "1900-01-01T00:00:00.000001Z"},
           Case{"Pacific/Kiritimati", "2023-12-31 23:59:59.999999+00",
                "2023-12-31T23:59:59.999999Z"},
           Case{"UTC", "0001-01-01 00:00:00+00", "0001-01-01T00:00:00.000000Z"},
       }) {
    INFO(c.zone << " " << c.value);
    const pqxx::result rows =
        Select(schema, absl::StrCat("SELECT '", c.value, "'::timestamptz AS t"),
               c.zone);
    auto json = RowToJson(rows[0]);
    REQUIRE(json.ok());
    // The exact bytes expected (c.want is a timestamp: nothing to escape).
    CHECK(*json == absl::StrCat(R"({"t":")", c.want, R"("})"));
  }
}

TEST_CASE("strings are escaped and UTF-8 survives", "[queries][pg]") {
  testing::TestSchema schema;
  const std::string text =
      "say \"hi\" \\ back\\slash\n\ttab \x01\x1f\x7f "
      "\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80 end";
  pqxx::connection conn(schema.url());
  pqxx::nontransaction tx(conn);
  const pqxx::result rows = tx.exec_params(
      "SELECT $1::text AS \"we\"\"ird \\ key\", $1 AS plain", text);
  auto json = RowToJson(rows[0]);
  REQUIRE(json.ok());
  CHECK(absl::StrContains(*json, R"(say \"hi\" \\ back\\slash\n\ttab )"
                                 R"(\u0001\u001F)"));
  rapidjson::Document doc = Parse(*json);
  REQUIRE(doc.HasMember("we\"ird \\ key"));
  const rapidjson::Value& value = doc["we\"ird \\ key"];
  CHECK(std::string(value.GetString(), value.GetStringLength()) == text);
  CHECK(std::string(doc["plain"].GetString()) == text);
}

TEST_CASE("values JSON cannot hold are errors naming the column",
          "[queries][pg]") {
  testing::TestSchema schema;
  for (const char* sql : {
           "SELECT 'NaN'::numeric AS bad",
           "SELECT 'Infinity'::numeric AS bad",
           "SELECT '-Infinity'::float8 AS bad",
           "SELECT 'NaN'::float4 AS bad",
           "SELECT 'infinity'::timestamptz AS bad",
           "SELECT '10000-01-01 00:00:00+00'::timestamptz AS bad",
           "SELECT '0044-03-15 12:00:00+00 BC'::timestamptz AS bad",
           "SELECT '0044-03-15 BC'::date AS bad",
           "SELECT 'infinity'::date AS bad",
       }) {
    INFO(sql);
    const pqxx::result rows = Select(schema, sql);
    auto json = RowToJson(rows[0]);
    REQUIRE(!json.ok());
    CHECK(json.status().code() == absl::StatusCode::kInternal);
    CHECK(absl::StrContains(json.status().message(), "\"bad\""));
  }
  // Year 1 in UTC, whatever the session shows (New York: 1 BC).
  for (const char* zone : {"Asia/Tokyo", "America/New_York"}) {
    INFO(zone);
    auto year_one = RowToJson(Select(
        schema, "SELECT '0001-01-01 00:00:00+00'::timestamptz AS t", zone)[0]);
    REQUIRE(year_one.ok());
    CHECK(*year_one == R"({"t":"0001-01-01T00:00:00.000000Z"})");
  }
  auto twice = RowsToJson(Select(schema, "SELECT 1 AS a, 2 AS a"));
  REQUIRE(!twice.ok());
  CHECK(absl::StrContains(twice.status().message(), "alias"));
}

TEST_CASE("QueryContext runs templates and answers with rows",
          "[queries][pg]") {
  testing::TestSchema schema;
  schema.Exec(absl::StrCat("CREATE TABLE ", schema.name(),
                           ".things (id text PRIMARY KEY, n int, note text)"));
  schema.Exec(absl::StrCat(
      "INSERT INTO ", schema.name(),
      ".things VALUES ('a', 1, NULL), ('b', 2, 'two'), ('c', 3, NULL)"));
  pqxx::connection conn(schema.url());
  pqxx::nontransaction tx(conn);
  const http::Request request = Get("/things/a");
  QueryContext q(request, tx, schema.name());

  auto sql = q.Sql("SELECT n FROM {things}");
  REQUIRE(sql.ok());
  CHECK(*sql == absl::StrCat("SELECT n FROM ", schema.name(), ".things"));
  auto bad = q.Sql("SELECT n FROM {Things}");
  REQUIRE(!bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInternal);
  CHECK(!q.Exec("SELECT n FROM {Things}").ok());

  auto one = q.One("SELECT id, n, note FROM {things} WHERE id = $1", {"b"},
                   "thing_not_found");
  REQUIRE(one.ok());
  CHECK(one->status == 200);
  CHECK(one->body == R"({"id":"b","n":2,"note":"two"})");

  auto missing =
      q.One("SELECT id FROM {things} WHERE id = $1", {"zz"}, "thing_not_found");
  REQUIRE(!missing.ok());
  const http::Response not_found = http::ResponseFromStatus(missing.status());
  CHECK(not_found.status == 404);
  CHECK(ErrorCodeOfBody(not_found.body) == "thing_not_found");

  auto chosen = q.One("SELECT id FROM {things} WHERE id = $1", {"zz"},
                      WithErrorCode(absl::NotFoundError("no zz"), "nope"));
  REQUIRE(!chosen.ok());
  CHECK(chosen.status().message() == "no zz");
  CHECK(ErrorCodeOf(chosen.status()) == "nope");

  auto several = q.One("SELECT id FROM {things}", {}, "thing_not_found");
  REQUIRE(!several.ok());
  CHECK(several.status().code() == absl::StatusCode::kInternal);

  // NULL parameters reach the server as NULL.
  auto null_param =
      q.One("SELECT $1::text IS NULL AS is_null", {std::nullopt}, "x");
  REQUIRE(null_param.ok());
  CHECK(null_param->body == R"({"is_null":true})");

  auto many = q.Many("SELECT id, note FROM {things} WHERE n >= $1 ORDER BY id",
                     {2}, kOmitNullColumns);
  REQUIRE(many.ok());
  CHECK(many->status == 200);
  CHECK(many->body == R"([{"id":"b","note":"two"},{"id":"c"}])");
  auto none = q.Many("SELECT id FROM {things} WHERE n > 99");
  REQUIRE(none.ok());
  CHECK(none->body == "[]");

  // A cursor walk, two at a time.
  const char* page_sql =
      "SELECT id, n FROM {things} WHERE id > $1 ORDER BY id LIMIT $2";
  auto first = q.Page(page_sql, {"", 3}, 2, {"id"});
  REQUIRE(first.ok());
  rapidjson::Document page = Parse(first->body);
  CHECK(page["items"].Size() == 2);
  CHECK(std::string(page["items"][1]["id"].GetString()) == "b");
  REQUIRE(page["next"].IsString());
  auto after = DecodeCursor(page["next"].GetString(), 1);
  REQUIRE(after.ok());
  CHECK(*after == std::vector<std::string>{"b"});
  auto second = q.Page(page_sql, {(*after)[0], 3}, 2, {"id"});
  REQUIRE(second.ok());
  CHECK(second->body == R"({"items":[{"id":"c","n":3}],"next":null})");
  CHECK(!q.Page(page_sql, {"", 3}, 2, {"missing"}).ok());
}

std::unique_ptr<ProgressTracker> NewTracker(testing::TestSchema& schema) {
  REQUIRE(projections::ProjectionRunner::Migrate(schema.pool(), schema.name())
              .ok());
  ProgressTrackerOptions options;
  options.schema = schema.name();
  auto tracker = ProgressTracker::Create(&schema.pool(), options);
  REQUIRE(tracker.ok());
  return *std::move(tracker);
}

// Calls the route registered for `target` as the server would.
http::Response Call(const http::Router& router, const std::string& target) {
  http::RouteMatch match = router.Match("GET", target);
  REQUIRE(match.result == http::RouteMatch::Result::kFound);
  http::Request request = Get(target);
  request.set_path_params(match.params);
  std::promise<http::Response> promise;
  match.route->async_handler(request,
                             http::Responder([&promise](http::Response r) {
                               promise.set_value(std::move(r));
                             }));
  auto future = promise.get_future();
  REQUIRE(future.wait_for(std::chrono::seconds(30)) ==
          std::future_status::ready);
  return future.get();
}

TEST_CASE("the query service expands placeholders with its schema",
          "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema);
  schema.Exec(absl::StrCat("CREATE TABLE ", schema.name(),
                           ".things (id text PRIMARY KEY, n bigint, "
                           "at timestamptz)"));
  schema.Exec(absl::StrCat(
      "INSERT INTO ", schema.name(),
      ".things VALUES ('a', 1, '2024-05-01 12:00:00.5+00'), ('b', 2, NULL)"));

  QueryServiceOptions bad_schema;
  bad_schema.conninfo = schema.url();
  bad_schema.schema = "Not-A-Schema";
  auto refused = QueryService::Create(tracker.get(), bad_schema);
  REQUIRE(!refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);

  QueryServiceOptions options;
  options.conninfo = schema.url();
  options.schema = schema.name();
  options.threads = 2;
  auto service = QueryService::Create(tracker.get(), options);
  REQUIRE(service.ok());
  CHECK((*service)->schema() == schema.name());
  http::Router router;

  // The context form, brace-initialized.
  (*service)->Add(
      router, {"/things/{id}",
               {"things"},
               [](QueryContext& q) -> absl::StatusOr<http::Response> {
                 return q.One("SELECT id, n, at FROM {things} WHERE id = $1",
                              {q.Param("id")}, "thing_not_found");
               }});
  // A prepared statement with a placeholder.
  QueryRoute listed;
  listed.pattern = "/things";
  listed.projections = {"things"};
  listed.prepared = {
      {"test_list_things", "SELECT id, n FROM {things} ORDER BY id"}};
  listed.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    return q.Many(Statement::Prepared("test_list_things"));
  };
  (*service)->Add(router, listed);
  // A handler whose SQL has a bad placeholder: its own bug, so 500.
  QueryRoute broken;
  broken.pattern = "/broken";
  broken.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    return q.Many("SELECT * FROM {things;}");
  };
  (*service)->Add(router, broken);
  REQUIRE(router.status().ok());

  http::Response a = Call(router, "/things/a");
  CHECK(a.status == 200);
  CHECK(a.body == R"({"id":"a","n":1,"at":"2024-05-01T12:00:00.500000Z"})");
  http::Response b = Call(router, "/things/b");
  CHECK(b.body == R"({"id":"b","n":2,"at":null})");
  http::Response missing = Call(router, "/things/zz");
  CHECK(missing.status == 404);
  CHECK(ErrorCodeOfBody(missing.body) == "thing_not_found");
  http::Response list = Call(router, "/things");
  CHECK(list.status == 200);
  CHECK(list.body == R"([{"id":"a","n":1},{"id":"b","n":2}])");
  http::Response fail = Call(router, "/broken");
  CHECK(fail.status == 500);
  CHECK(absl::StrContains(fail.log_detail, "{things;}"));

  // A prepared statement that does not expand is refused at Add().
  http::Router other;
  QueryRoute wrong;
  wrong.pattern = "/wrong";
  wrong.prepared = {{"test_wrong", "SELECT * FROM {Things}"}};
  wrong.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    return q.Many(Statement::Prepared("test_wrong"));
  };
  (*service)->Add(other, wrong);
  REQUIRE(!other.status().ok());
  CHECK(absl::StrContains(other.status().message(), "test_wrong"));
  CHECK(absl::StrContains(other.status().message(), "{Things}"));
  CHECK(other.Match("GET", "/wrong").result !=
        http::RouteMatch::Result::kFound);

  // An empty std::function is no handler.
  http::Router empty;
  QueryRoute unset;
  unset.pattern = "/unset";
  unset.handler = QueryHandler();
  (*service)->Add(empty, unset);
  CHECK(!empty.status().ok());
}

}  // namespace
}  // namespace cqrs::queries
