#include "framework/http/message.h"

#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "rapidjson/document.h"

namespace cqrs {
namespace http {
namespace {

TEST_CASE("request splits and decodes its target", "[http]") {
  absl::StatusOr<Request> request = Request::Create(
      "GET", "/accounts/a%20b/tx?limit=5&after=x%2By&flag&q=a+b&limit=7",
      {{"Content-Type", "application/json"}, {"X-Thing", "one"}}, "body");
  REQUIRE(request.ok());
  CHECK(request->method() == "GET");
  CHECK(request->target() ==
        "/accounts/a%20b/tx?limit=5&after=x%2By&flag&q=a+b&limit=7");
  CHECK(request->path() == "/accounts/a b/tx");
  CHECK(request->raw_path() == "/accounts/a%20b/tx");
  CHECK(request->Query("limit").value_or("") == "5");
  CHECK(request->Query("after").value_or("") == "x+y");
  CHECK(request->Query("q").value_or("") == "a b");
  REQUIRE(request->Query("flag").has_value());
  CHECK(request->Query("flag")->empty());
  CHECK_FALSE(request->Query("missing").has_value());
  CHECK(request->query_params().size() == 5);
  CHECK(request->body() == "body");
}

TEST_CASE("request header lookup ignores case", "[http]") {
  absl::StatusOr<Request> request = Request::Create(
      "POST", "/x",
      {{"Content-Type", "text/plain"}, {"x-a", "1"}, {"X-A", "2"}}, "");
  REQUIRE(request.ok());
  CHECK(request->Header("content-type").value_or("") == "text/plain");
  CHECK(request->Header("CONTENT-TYPE").value_or("") == "text/plain");
  CHECK(request->Header("X-A").value_or("") == "1");
  CHECK_FALSE(request->Header("Accept").has_value());
}

TEST_CASE("request rejects bad targets", "[http]") {
  CHECK(Request::Create("GET", "accounts", {}, "").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Request::Create("GET", "", {}, "").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Request::Create("GET", "/a%zz", {}, "").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Request::Create("GET", "/a?x=%4", {}, "").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("request refuses a NUL byte anywhere", "[http]") {
  using namespace std::string_literals;
  const auto refused = [](const absl::StatusOr<Request>& request) {
    INFO(request.status().ToString());
    return request.status().code() == absl::StatusCode::kInvalidArgument &&
           absl::StrContains(request.status().message(), "NUL");
  };
  // Raw in the path and the query, and percent-encoded.
  CHECK(refused(Request::Create("GET", "/accounts/a\0b"s, {}, "")));
  CHECK(refused(Request::Create("GET", "/accounts?owner=Ann\0x"s, {}, "")));
  CHECK(refused(Request::Create("GET", "/accounts/a%00b", {}, "")));
  CHECK(refused(Request::Create("GET", "/accounts?owner=Ann%00x", {}, "")));
  CHECK(refused(Request::Create("GET", "/accounts?own%00er=Ann", {}, "")));
  CHECK(refused(Request::Create("GET", "/accounts?owner=%00", {}, "")));
  // Headers, name or value.
  CHECK(
      refused(Request::Create("GET", "/accounts", {{"X-Thing", "a\0b"s}}, "")));
  CHECK(
      refused(Request::Create("GET", "/accounts", {{"X-\0Thing"s, "ab"}}, "")));
  // The body, wherever the NUL is.
  CHECK(refused(Request::Create("POST", "/accounts/a1/deposit", {},
                                "{\"amount\":5}\0{\"amount\":7}garbage"s)));
  CHECK(refused(Request::Create("POST", "/x", {}, "\0"s)));
  // The escape text "\u0000" is not a NUL byte: the JSON readers refuse it
  // (json_body_test.cc).
  CHECK(Request::Create("POST", "/x", {}, R"({"a":"\u0000"})").ok());
  CHECK(Request::Create("GET", "/accounts?owner=Ann%01x", {}, "").ok());
}

TEST_CASE("path params are looked up by name", "[http]") {
  Request request;
  request.set_path_params({{"id", "a1"}, {"other", "b"}});
  CHECK(request.PathParam("id") == "a1");
  CHECK(request.PathParam("other") == "b");
  CHECK(request.PathParam("nope").empty());
}

TEST_CASE("percent decoding", "[http]") {
  CHECK(PercentDecode("a%2Fb+c", DecodeMode::kPath).value() == "a/b+c");
  CHECK(PercentDecode("a%2fb+c", DecodeMode::kQuery).value() == "a/b c");
  CHECK_FALSE(PercentDecode("%", DecodeMode::kPath).ok());
  CHECK_FALSE(PercentDecode("%g0", DecodeMode::kPath).ok());
}

TEST_CASE("error response body is exactly the error envelope", "[http]") {
  const Response response =
      ErrorResponse(404, "account_not_found", "account \"a1\" not found");
  CHECK(response.status == 404);
  CHECK(response.content_type == "application/json");
  CHECK(
      response.body ==
      R"({"error":{"code":"account_not_found","message":"account \"a1\" not found"}})");
}

TEST_CASE("error body stays valid JSON for any message bytes", "[http]") {
  const std::string body = ErrorBody("bad", "ctrl \x01 and \xff\xfe bytes\n");
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(body.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(std::string(doc["error"]["message"].GetString()) ==
        "ctrl \x01 and \xEF\xBF\xBD\xEF\xBF\xBD bytes\n");
}

TEST_CASE("response helpers", "[http]") {
  Response json = JsonResponse(201, R"({"a":1})");
  CHECK(json.status == 201);
  CHECK(json.content_type == "application/json");
  CHECK(json.body == R"({"a":1})");

  Response text = TextResponse(200, "ok");
  CHECK(text.content_type == "text/plain; charset=utf-8");

  json.headers.emplace_back("X-One", "1");
  json.headers.emplace_back("x-one", "2");
  json.SetHeader("X-ONE", "3");
  REQUIRE(json.headers.size() == 1);
  CHECK(json.Header("x-one").value_or("") == "3");
}

}  // namespace
}  // namespace http
}  // namespace cqrs
