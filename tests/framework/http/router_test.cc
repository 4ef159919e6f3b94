#include "framework/http/router.h"

#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

namespace cqrs {
namespace http {
namespace {

// Route options spelled out, rather than as bare positional values.
RouteOptions OnNetworkThread() {
  RouteOptions options;
  options.execution = Execution::kNetworkThread;
  return options;
}

RouteOptions JsonBodyRequired() {
  RouteOptions options;
  options.require_json_body = true;
  return options;
}

Response Named(absl::string_view name) {
  return JsonResponse(200, std::string(name));
}

Handler Returns(std::string name) {
  return [name](const Request&) { return Named(name); };
}

// Runs the matched route's handler and returns its body.
std::string Call(const RouteMatch& match) {
  REQUIRE(match.route != nullptr);
  Request request;
  return match.route->handler(request).body;
}

TEST_CASE("router matches literal and parameter segments", "[http]") {
  Router router;
  router.Add("GET", "/accounts/{id}", Returns("get"));
  router.Add("POST", "/accounts/{id}/deposit", Returns("deposit"));
  router.Add("GET", "/accounts/{id}/transfers/{tid}", Returns("transfer"));
  router.Add("GET", "/", Returns("root"));
  REQUIRE(router.status().ok());

  RouteMatch match = router.Match("POST", "/accounts/a1/deposit");
  REQUIRE(match.result == RouteMatch::Result::kFound);
  CHECK(Call(match) == "deposit");
  CHECK(match.params == ParamList{{"id", "a1"}});

  match = router.Match("GET", "/accounts/a1/transfers/t%2F9");
  REQUIRE(match.result == RouteMatch::Result::kFound);
  CHECK(match.params == ParamList{{"id", "a1"}, {"tid", "t/9"}});
  CHECK(match.route->pattern == "/accounts/{id}/transfers/{tid}");

  match = router.Match("GET", "/");
  REQUIRE(match.result == RouteMatch::Result::kFound);
  CHECK(Call(match) == "root");
}

TEST_CASE("router answers not found for unknown paths", "[http]") {
  Router router;
  router.Add("GET", "/accounts/{id}", Returns("get"));
  CHECK(router.Match("GET", "/accounts").result ==
        RouteMatch::Result::kNotFound);
  CHECK(router.Match("GET", "/accounts/").result ==
        RouteMatch::Result::kNotFound);  // A parameter is never empty.
  CHECK(router.Match("GET", "/accounts/a1/").result ==
        RouteMatch::Result::kNotFound);
  CHECK(router.Match("GET", "/other/a1").result ==
        RouteMatch::Result::kNotFound);
  CHECK(router.Match("GET", "").result == RouteMatch::Result::kNotFound);
}

TEST_CASE("router lists allowed methods for a known path", "[http]") {
  Router router;
  router.Add("POST", "/accounts", Returns("create"));
  router.Add("GET", "/accounts", Returns("list"));
  router.Add("DELETE", "/accounts/{id}", Returns("delete"));
  const RouteMatch match = router.Match("PUT", "/accounts");
  CHECK(match.result == RouteMatch::Result::kMethodNotAllowed);
  // HEAD where GET is served, and OPTIONS, are always allowed.
  CHECK(match.allowed_methods ==
        std::vector<std::string>{"GET", "HEAD", "OPTIONS", "POST"});
  CHECK(match.route == nullptr);
  const RouteMatch no_get = router.Match("GET", "/accounts/a1");
  CHECK(no_get.result == RouteMatch::Result::kMethodNotAllowed);
  CHECK(no_get.allowed_methods ==
        std::vector<std::string>{"DELETE", "OPTIONS"});
}

TEST_CASE("HEAD runs the GET route unless HEAD is registered", "[http]") {
  Router router;
  router.Add("GET", "/accounts/{id}", Returns("get"));
  router.Add("GET", "/accounts/stats", Returns("stats"));
  router.Add("POST", "/accounts", Returns("create"));
  router.Add("GET", "/own-head", Returns("get"));
  router.Add("HEAD", "/own-head", Returns("head"));
  REQUIRE(router.status().ok());

  RouteMatch match = router.Match("HEAD", "/accounts/a1");
  REQUIRE(match.result == RouteMatch::Result::kFound);
  CHECK(match.route->method == "GET");
  CHECK(match.route->pattern == "/accounts/{id}");
  CHECK(match.params == ParamList{{"id", "a1"}});
  // The most specific GET route, as for GET.
  CHECK(Call(router.Match("HEAD", "/accounts/stats")) == "stats");
  CHECK(Call(router.Match("HEAD", "/own-head")) == "head");

  // A path without GET: 405, and Allow does not offer HEAD.
  match = router.Match("HEAD", "/accounts");
  CHECK(match.result == RouteMatch::Result::kMethodNotAllowed);
  CHECK(match.allowed_methods == std::vector<std::string>{"OPTIONS", "POST"});
  CHECK(router.Match("HEAD", "/nope").result == RouteMatch::Result::kNotFound);
}

TEST_CASE("OPTIONS lists the methods of an existing path", "[http]") {
  Router router;
  router.Add("GET", "/accounts/{id}", Returns("get"));
  router.Add("POST", "/accounts/{id}/deposit", Returns("deposit"));
  router.Add("OPTIONS", "/custom", Returns("custom"));
  REQUIRE(router.status().ok());

  RouteMatch match = router.Match("OPTIONS", "/accounts/a1");
  CHECK(match.result == RouteMatch::Result::kOptions);
  CHECK(match.route == nullptr);
  CHECK(match.allowed_methods ==
        std::vector<std::string>{"GET", "HEAD", "OPTIONS"});
  match = router.Match("OPTIONS", "/accounts/a1/deposit");
  CHECK(match.result == RouteMatch::Result::kOptions);
  CHECK(match.allowed_methods == std::vector<std::string>{"OPTIONS", "POST"});
  // A registered OPTIONS route answers for itself.
  CHECK(Call(router.Match("OPTIONS", "/custom")) == "custom");
  CHECK(router.Match("OPTIONS", "/nope").result ==
        RouteMatch::Result::kNotFound);
  CHECK(router.Match("OPTIONS", "/%zz").result == RouteMatch::Result::kBadPath);
}

TEST_CASE("a literal segment beats a parameter", "[http]") {
  Router router;
  router.Add("GET", "/accounts/{id}", Returns("param"));
  router.Add("GET", "/accounts/stats", Returns("literal"));
  router.Add("GET", "/{a}/x", Returns("first-param"));
  router.Add("GET", "/accounts/{id2}/x", Returns("first-literal"));
  REQUIRE(router.status().ok());
  CHECK(Call(router.Match("GET", "/accounts/stats")) == "literal");
  CHECK(Call(router.Match("GET", "/accounts/other")) == "param");
  CHECK(Call(router.Match("GET", "/accounts/q/x")) == "first-literal");
  CHECK(Call(router.Match("GET", "/other/x")) == "first-param");
}

TEST_CASE("literal segments compare decoded", "[http]") {
  Router router;
  router.Add("GET", "/accounts", Returns("list"));
  CHECK(router.Match("GET", "/%61ccounts").result ==
        RouteMatch::Result::kFound);
  CHECK(router.Match("GET", "/%zz").result == RouteMatch::Result::kBadPath);
}

TEST_CASE("methods are upper-cased on registration", "[http]") {
  Router router;
  router.Add("get", "/x", Returns("x"));
  REQUIRE(router.status().ok());
  CHECK(router.Match("GET", "/x").result == RouteMatch::Result::kFound);
  CHECK(router.Routes() ==
        std::vector<std::pair<std::string, std::string>>{{"GET", "/x"}});
}

TEST_CASE("bad routes are reported through status()", "[http]") {
  struct Case {
    const char* method;
    const char* pattern;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {"GET", "accounts", absl::StatusCode::kInvalidArgument},
      {"GET", "", absl::StatusCode::kInvalidArgument},
      {"GET", "/a?b", absl::StatusCode::kInvalidArgument},
      {"GE T", "/a", absl::StatusCode::kInvalidArgument},
      {"", "/a", absl::StatusCode::kInvalidArgument},
      {"GET", "/a/{}", absl::StatusCode::kInvalidArgument},
      {"GET", "/a/{1x}", absl::StatusCode::kInvalidArgument},
      {"GET", "/a/{id}/{id}", absl::StatusCode::kInvalidArgument},
      {"GET", "/a/x{id}", absl::StatusCode::kInvalidArgument},
      {"GET", "/dup/{other}", absl::StatusCode::kAlreadyExists},
  };
  for (const Case& c : cases) {
    INFO(c.method << " " << c.pattern);
    Router router;
    router.Add("GET", "/dup/{id}", Returns("first"));
    REQUIRE(router.status().ok());
    router.Add(c.method, c.pattern, Returns("bad"));
    CHECK(router.status().code() == c.code);
    CHECK(router.Routes().size() == 1);
  }
}

TEST_CASE("a route without a handler is an error", "[http]") {
  Router router;
  router.Add("GET", "/x", Handler());
  CHECK(router.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("routes are listed in registration order with options", "[http]") {
  Router router;
  router.Add("GET", "/healthz", Returns("ok"), OnNetworkThread());
  router.AddAsync(
      "POST", "/accounts",
      [](const Request&, Responder respond) { respond(Named("async")); },
      JsonBodyRequired());
  const auto routes = router.Routes();
  REQUIRE(routes.size() == 2);
  CHECK(routes[0] ==
        std::make_pair(std::string("GET"), std::string("/healthz")));
  CHECK(routes[1] ==
        std::make_pair(std::string("POST"), std::string("/accounts")));
  const RouteMatch health = router.Match("GET", "/healthz");
  REQUIRE(health.route != nullptr);
  CHECK(health.route->options.execution == Execution::kNetworkThread);
  const RouteMatch create = router.Match("POST", "/accounts");
  REQUIRE(create.route != nullptr);
  CHECK(create.route->options.require_json_body);
  CHECK(create.route->async_handler);
  CHECK_FALSE(create.route->handler);
}

TEST_CASE("FromStatusOr maps errors through ResponseFromStatus", "[http]") {
  const Handler handler =
      FromStatusOr([](const Request& request) -> absl::StatusOr<Response> {
        if (request.PathParam("id") == "missing") {
          return absl::NotFoundError("no such account");
        }
        return JsonResponse(200, "{}");
      });
  Request request;
  request.set_path_params({{"id", "missing"}});
  const Response error = handler(request);
  CHECK(error.status == 404);
  CHECK(error.body == ErrorBody("not_found", "no such account"));
  request.set_path_params({{"id", "a1"}});
  CHECK(handler(request).status == 200);
}

TEST_CASE("a responder delivers once from any thread", "[http]") {
  std::atomic<int> calls{0};
  std::atomic<int> last_status{0};
  {
    Responder responder([&](Response response) {
      ++calls;
      last_status = response.status;
    });
    Responder copy = responder;
    std::thread other([copy] { copy(JsonResponse(201, "{}")); });
    other.join();
    responder(JsonResponse(202, "{}"));  // Ignored: already answered.
  }
  CHECK(calls == 1);
  CHECK(last_status == 201);
}

TEST_CASE("a dropped responder answers 500", "[http]") {
  Response delivered;
  int calls = 0;
  {
    Responder responder([&](Response response) {
      ++calls;
      delivered = std::move(response);
    });
    Responder copy = responder;  // Copies share one delivery.
  }
  CHECK(calls == 1);
  CHECK(delivered.status == 500);
  CHECK(delivered.body == ErrorBody("internal", "internal error"));
  CHECK_FALSE(delivered.log_detail.empty());
}

}  // namespace
}  // namespace http
}  // namespace cqrs
