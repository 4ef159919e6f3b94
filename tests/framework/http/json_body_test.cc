#include "framework/http/json_body.h"

#include <string>

#include <catch2/catch.hpp>

#include "framework/http/status_mapping.h"
#include "rapidjson/document.h"

namespace cqrs {
namespace http {
namespace {

rapidjson::Document Parsed(const char* text) {
  rapidjson::Document doc;
  const absl::Status status = ParseJsonBody(text, &doc);
  REQUIRE(status.ok());
  return doc;
}

void CheckInvalidRequest(const absl::Status& status, const char* field) {
  INFO(status.ToString());
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(ErrorCodeOf(status) == "invalid_request");
  CHECK(std::string(status.message()).find(field) != std::string::npos);
  CHECK(ResponseFromStatus(status).status == 400);
}

TEST_CASE("malformed JSON is invalid_json", "[http]") {
  for (const char* body : {"{", "{\"a\":}", "{\"a\":1} x", "{'a':1}", "[1,]",
                           "{\"a\":1}{}", "{\"a\":NaN}", "  ", ""}) {
    INFO(body);
    rapidjson::Document doc;
    const absl::Status status = ParseJsonBody(body, &doc);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(ErrorCodeOf(status) == "invalid_json");
    const Response response = ResponseFromStatus(status);
    CHECK(response.status == 400);
  }
}

TEST_CASE("a NUL byte in the body is invalid_request, not an end", "[http]") {
  using namespace std::string_literals;
  // Without the NUL, the trailing text is invalid_json; with it, RapidJSON
  // alone would stop at the NUL and accept {"amount":5}.
  for (const std::string& body : {"{\"amount\":5}\0{\"amount\":7}garbage"s,
                                  "{\"amount\":5}\0"s, "{\"amount\":\0 5}"s}) {
    rapidjson::Document doc;
    CheckInvalidRequest(ParseJsonBody(body, &doc), "NUL byte");
  }
  rapidjson::Document doc;
  CHECK(ErrorCodeOf(ParseJsonBody(R"({"amount":5}{"amount":7}garbage)",
                                  &doc)) == "invalid_json");
}

TEST_CASE("invalid UTF-8 is invalid_json", "[http]") {
  rapidjson::Document doc;
  const absl::Status status = ParseJsonBody("{\"a\":\"\xff\"}", &doc);
  CHECK(ErrorCodeOf(status) == "invalid_json");
}

TEST_CASE("deep nesting is rejected without exhausting the stack", "[http]") {
  const std::string body(1 << 20, '[');
  rapidjson::Document doc;
  const absl::Status status = ParseJsonBody(body, &doc);
  CHECK(ErrorCodeOf(status) == "invalid_json");
}

TEST_CASE("a JSON body must be an object", "[http]") {
  rapidjson::Document doc;
  const absl::Status status = ParseJsonBody("[1,2]", &doc);
  CHECK(ErrorCodeOf(status) == "invalid_request");
  CHECK(ResponseFromStatus(status).status == 400);
}

TEST_CASE("a member named twice is invalid_request at any depth", "[http]") {
  struct Case {
    const char* body;
    const char* message;
  };
  for (const Case& c : {
           Case{R"({"owner":"a","owner":"b"})", "duplicate field \"owner\""},
           Case{R"({"owner":"a","currency":"EUR","owner":"a"})",
                "duplicate field \"owner\""},
           Case{R"({"a":{"b":1,"b":1}})", "duplicate field \"a.b\""},
           Case{R"({"a":[{},{"c":[{"d":1,"d":null}]}]})",
                "duplicate field \"a[1].c[0].d\""},
       }) {
    INFO(c.body);
    rapidjson::Document doc;
    const absl::Status status = ParseJsonBody(c.body, &doc);
    CheckInvalidRequest(status, c.message);
  }
  // The same name in different objects is fine.
  rapidjson::Document doc;
  CHECK(ParseJsonBody(R"({"a":{"a":1},"b":[{"a":1},{"a":2}]})", &doc).ok());
}

TEST_CASE("an empty body may count as an empty object", "[http]") {
  rapidjson::Document doc;
  REQUIRE(ParseJsonBody(" \n", &doc, EmptyBody::kAsEmptyObject).ok());
  CHECK(doc.IsObject());
  CHECK(doc.MemberCount() == 0);
  REQUIRE(ParseJsonBody("{\"a\":1}", &doc, EmptyBody::kAsEmptyObject).ok());
  CHECK(doc.HasMember("a"));
}

TEST_CASE("RequiredInt64 is strict", "[http]") {
  const rapidjson::Document doc = Parsed(
      R"({"ok":42,"neg":-7,"float":1.0,"exp":1e3,"str":"1","bool":true,)"
      R"("big":9223372036854775808,"min":-9223372036854775808,"null":null,)"
      R"("arr":[1]})");
  CHECK(RequiredInt64(doc, "ok").value() == 42);
  CHECK(RequiredInt64(doc, "neg").value() == -7);
  CHECK(RequiredInt64(doc, "min").value() == INT64_MIN);
  for (const char* field : {"float", "exp", "str", "bool", "big", "arr"}) {
    CheckInvalidRequest(RequiredInt64(doc, field).status(), field);
  }
  CheckInvalidRequest(RequiredInt64(doc, "null").status(), "null");
  CheckInvalidRequest(RequiredInt64(doc, "missing").status(), "missing");
}

TEST_CASE("RequiredInt64 checks bounds", "[http]") {
  const rapidjson::Document doc = Parsed(
      R"({"zero":0,"one":1,"max":1000000000000000,"over":1000000000000001})");
  const Int64Bounds amount{1, 1000000000000000};
  CheckInvalidRequest(RequiredInt64(doc, "zero", amount).status(), "zero");
  CHECK(RequiredInt64(doc, "one", amount).value() == 1);
  CHECK(RequiredInt64(doc, "max", amount).value() == 1000000000000000);
  CheckInvalidRequest(RequiredInt64(doc, "over", amount).status(), "over");
}

TEST_CASE("OptionalInt64 treats missing and null as absent", "[http]") {
  const rapidjson::Document doc = Parsed(R"({"a":5,"n":null,"s":"x"})");
  CHECK(OptionalInt64(doc, "a").value() == absl::optional<int64_t>(5));
  CHECK_FALSE(OptionalInt64(doc, "n").value().has_value());
  CHECK_FALSE(OptionalInt64(doc, "missing").value().has_value());
  CheckInvalidRequest(OptionalInt64(doc, "s").status(), "s");
}

TEST_CASE("RequiredString checks type and length", "[http]") {
  const rapidjson::Document doc = Parsed(
      R"({"owner":"Ada","empty":"","long":"abcdefgh","num":5,"nul":"a\u0000b"})");
  CHECK(RequiredString(doc, "owner", {1, 200}).value() == "Ada");
  CheckInvalidRequest(RequiredString(doc, "empty", {1, 200}).status(), "empty");
  CHECK(RequiredString(doc, "empty").value().empty());
  CheckInvalidRequest(RequiredString(doc, "long", {1, 4}).status(), "long");
  CheckInvalidRequest(RequiredString(doc, "num").status(), "num");
  CheckInvalidRequest(RequiredString(doc, "nul").status(), "nul");
  CheckInvalidRequest(RequiredString(doc, "missing").status(), "missing");
}

TEST_CASE("OptionalString treats missing and null as absent", "[http]") {
  const rapidjson::Document doc = Parsed(R"({"id":"a1","n":null,"x":[]})");
  CHECK(OptionalString(doc, "id").value() == absl::optional<std::string>("a1"));
  CHECK_FALSE(OptionalString(doc, "n").value().has_value());
  CHECK_FALSE(OptionalString(doc, "missing").value().has_value());
  CheckInvalidRequest(OptionalString(doc, "x").status(), "x");
  CheckInvalidRequest(OptionalString(doc, "id", {3, 64}).status(), "id");
}

TEST_CASE("bool helpers", "[http]") {
  const rapidjson::Document doc = Parsed(R"({"t":true,"f":false,"i":1})");
  CHECK(RequiredBool(doc, "t").value());
  CHECK_FALSE(RequiredBool(doc, "f").value());
  CheckInvalidRequest(RequiredBool(doc, "i").status(), "i");
  CHECK_FALSE(OptionalBool(doc, "missing").value().has_value());
  CHECK(OptionalBool(doc, "t").value() == absl::optional<bool>(true));
}

TEST_CASE("unknown fields are named", "[http]") {
  const rapidjson::Document doc = Parsed(R"({"amount":1,"ammount":2})");
  CHECK(RejectUnknownFields(doc, {"amount", "ammount"}).ok());
  CheckInvalidRequest(RejectUnknownFields(doc, {"amount"}), "ammount");
}

TEST_CASE("InvalidRequest carries the code", "[http]") {
  CheckInvalidRequest(InvalidRequest("from and to must differ"), "differ");
}

}  // namespace
}  // namespace http
}  // namespace cqrs
