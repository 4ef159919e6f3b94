// The server's authentication and per-route scopes (framework/http/auth.h),
// with an authenticator that knows a fixed set of tokens. The API-key store
// behind real apps is tested in tests/framework/api_keys_test.cc and, over
// HTTP with every bank route, in tests/example_app/bank_auth_test.cc.
#include "framework/http/auth.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/http/internal/failure_limiter.h"
#include "framework/http/server.h"
#include "framework/json_shape.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/framework/http/log_capture.h"

namespace cqrs {
namespace http {
namespace {

using http_test::ClientResponse;
using http_test::LogCapture;
using http_test::TestClient;

// Knows tokens "tok-<id>"; `cached` says whether AuthenticateCached()
// answers or defers to Authenticate() (as a cache miss does).
class FixedAuthenticator : public Authenticator {
 public:
  enum class Answer { kCached, kOnWorker, kDatabaseDown };

  explicit FixedAuthenticator(Answer answer) : answer_(answer) {}

  void Add(const std::string& id, std::vector<std::string> scopes) {
    principals_[absl::StrCat("tok-", id)] = Principal{id, std::move(scopes)};
  }

  absl::optional<absl::StatusOr<PrincipalPtr>> AuthenticateCached(
      absl::string_view token) override {
    if (answer_ != Answer::kCached) return absl::nullopt;
    return Lookup(token);
  }

  absl::StatusOr<PrincipalPtr> Authenticate(absl::string_view token) override {
    ++blocking_calls;
    if (answer_ == Answer::kDatabaseDown) {
      return absl::UnavailableError("the database is not reachable");
    }
    return Lookup(token);
  }

  std::atomic<int> blocking_calls{0};

 private:
  absl::StatusOr<PrincipalPtr> Lookup(absl::string_view token) const {
    auto it = principals_.find(std::string(token));
    if (it == principals_.end()) return absl::UnauthenticatedError("no");
    return std::make_shared<const Principal>(it->second);
  }

  const Answer answer_;
  std::map<std::string, Principal> principals_;
};

// What the test routes answer: who called.
struct Who {
  std::string actor;
  static auto Json() { return json::Shape<Who>().Field("actor", &Who::actor); }
};

RouteOptions Needs(const std::string& scope,
                   Execution execution = Execution::kWorkerPool) {
  RouteOptions options;
  options.access = RouteAccess::Scope(scope);
  options.execution = execution;
  return options;
}

RouteOptions Open() {
  RouteOptions options;
  options.access = RouteAccess::Open();
  return options;
}

struct AuthServer {
  explicit AuthServer(
      FixedAuthenticator::Answer answer = FixedAuthenticator::Answer::kCached,
      int max_failures = 100)
      : authenticator(answer) {
    authenticator.Add("k1", {"commands", "queries"});
    authenticator.Add("k2", {"metrics"});
    const auto who = [this](const Request& request) {
      ++handler_calls;
      return JsonResponse(200, json::Encode(Who{std::string(request.actor())}));
    };
    router.Add("POST", "/things", who, Needs("commands"));
    router.Add("GET", "/things", who, Needs("queries"));
    router.Add("GET", "/inline", who,
               Needs("queries", Execution::kNetworkThread));
    router.Add("GET", "/healthz", who, Open());
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.worker_threads = 2;
    options.auth.authenticator = &authenticator;
    options.auth.max_failures = max_failures;
    auto created = Server::Create(options, &router);
    REQUIRE(created.ok());
    server = *std::move(created);
    REQUIRE(server->Start().ok());
  }

  ClientResponse Send(const std::string& method, const std::string& target,
                      const HeaderList& headers = {}) {
    auto client = TestClient::Connect(server->port());
    REQUIRE(client.ok());
    auto r = (*client)->Send(method, target, "", headers);
    REQUIRE(r.ok());
    return *std::move(r);
  }

  FixedAuthenticator authenticator;
  Router router;
  std::unique_ptr<Server> server;
  std::atomic<int> handler_calls{0};
};

std::string ErrorCode(const ClientResponse& r) {
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  REQUIRE(doc.IsObject());
  return doc["error"]["code"].GetString();
}

HeaderList Bearer(const std::string& token) {
  return {{"Authorization", absl::StrCat("Bearer ", token)}};
}

TEST_CASE("BearerToken reads the Authorization header", "[http][auth]") {
  const auto token_of = [](const char* value) {
    auto r = Request::Create("GET", "/", {{"Authorization", value}}, "");
    REQUIRE(r.ok());
    absl::optional<absl::string_view> token = BearerToken(*r);
    REQUIRE(token.has_value());
    return std::string(*token);
  };
  Request without;
  CHECK_FALSE(BearerToken(without).has_value());
  CHECK(token_of("Bearer abc_DEF-1.2~3+4/5==") == "abc_DEF-1.2~3+4/5==");
  CHECK(token_of("bearer   abc") == "abc");
  CHECK(token_of("Basic dXNlcjpwYXNz").empty());
  CHECK(token_of("Bearer").empty());
  CHECK(token_of("Bearer ").empty());
  CHECK(token_of("Bearer a b").empty());
  CHECK(token_of("Bearer =abc").empty());
  CHECK(token_of("Bearerabc").empty());
}

TEST_CASE("A route with a scope needs a token that has it", "[http][auth]") {
  const auto answer = GENERATE(FixedAuthenticator::Answer::kCached,
                               FixedAuthenticator::Answer::kOnWorker);
  AuthServer s(answer);

  for (const char* target : {"/things", "/inline"}) {
    INFO(target);
    ClientResponse r = s.Send("GET", target);
    CHECK(r.status == 401);
    CHECK(ErrorCode(r) == "unauthenticated");
    CHECK(r.Header("WWW-Authenticate").value_or("") == "Bearer");

    for (const HeaderList& bad :
         {Bearer("tok-unknown"), HeaderList{{"Authorization", "Basic eDp5"}},
          HeaderList{{"Authorization", "Bearer"}}}) {
      ClientResponse refused = s.Send("GET", target, bad);
      CHECK(refused.status == 401);
      // One message for every reason.
      CHECK(refused.body == r.body);
      CHECK(refused.Header("WWW-Authenticate").value_or("") == "Bearer");
    }

    ClientResponse forbidden = s.Send("GET", target, Bearer("tok-k2"));
    CHECK(forbidden.status == 403);
    CHECK(ErrorCode(forbidden) == "forbidden");
    CHECK(absl::StrContains(forbidden.body, "'queries'"));

    ClientResponse ok = s.Send("GET", target, Bearer("tok-k1"));
    CHECK(ok.status == 200);
    CHECK(ok.body == R"({"actor":"k1"})");
  }
  CHECK(s.handler_calls == 2);
  CHECK(s.Send("POST", "/things", Bearer("tok-k2")).status == 403);
  CHECK(s.Send("POST", "/things", Bearer("tok-k1")).status == 200);
  CHECK(s.handler_calls == 3);
  if (answer == FixedAuthenticator::Answer::kOnWorker) {
    CHECK(s.authenticator.blocking_calls > 0);
  } else {
    CHECK(s.authenticator.blocking_calls == 0);
  }

  // An open route needs nothing and ignores a bad token.
  CHECK(s.Send("GET", "/healthz").body == R"({"actor":"anonymous"})");
  CHECK(s.Send("GET", "/healthz", Bearer("tok-unknown")).status == 200);
}

TEST_CASE("HEAD is authorized as GET; OPTIONS needs no token", "[http][auth]") {
  AuthServer s;
  // HEAD on a GET route with a scope: the same checks as GET.
  ClientResponse r = s.Send("HEAD", "/things");
  CHECK(r.status == 401);
  CHECK(r.body.empty());
  CHECK(s.Send("HEAD", "/things", Bearer("tok-unknown")).status == 401);
  CHECK(s.Send("HEAD", "/things", Bearer("tok-k2")).status == 403);
  CHECK(s.handler_calls == 0);
  const ClientResponse get = s.Send("GET", "/things", Bearer("tok-k1"));
  REQUIRE(get.status == 200);
  r = s.Send("HEAD", "/things", Bearer("tok-k1"));
  CHECK(r.status == 200);
  CHECK(r.body.empty());
  CHECK(r.Header("Content-Length").value_or("") ==
        std::to_string(get.body.size()));
  CHECK(s.handler_calls == 2);

  // OPTIONS names the methods without running a handler or asking for a
  // token, even on a route that needs a scope.
  r = s.Send("OPTIONS", "/things");
  CHECK(r.status == 204);
  CHECK(r.Header("Allow").value_or("") == "GET, HEAD, OPTIONS, POST");
  CHECK(s.Send("OPTIONS", "/nope").status == 404);
  CHECK(s.handler_calls == 2);
}

TEST_CASE("An authenticator that cannot tell answers 503", "[http][auth]") {
  AuthServer s(FixedAuthenticator::Answer::kDatabaseDown);
  ClientResponse r = s.Send("GET", "/things", Bearer("tok-k1"));
  CHECK(r.status == 503);
  CHECK(s.handler_calls == 0);
}

TEST_CASE("Repeated failures from one address are answered 429",
          "[http][auth]") {
  AuthServer s(FixedAuthenticator::Answer::kCached, /*max_failures=*/3);
  // Requests without a token are not attempts.
  for (int i = 0; i < 5; ++i) CHECK(s.Send("GET", "/things").status == 401);
  for (int i = 0; i < 3; ++i) {
    CHECK(s.Send("GET", "/things", Bearer("tok-wrong")).status == 401);
  }
  for (const HeaderList& headers : {Bearer("tok-wrong"), Bearer("tok-k1")}) {
    ClientResponse r = s.Send("GET", "/things", headers);
    CHECK(r.status == 429);
    CHECK(ErrorCode(r) == "too_many_requests");
    const std::string retry = r.Header("Retry-After").value_or("");
    int seconds = 0;
    REQUIRE(absl::SimpleAtoi(retry, &seconds));
    CHECK(seconds >= 1);
    CHECK(seconds <= 60);
  }
  CHECK(s.handler_calls == 0);
  // Open routes still answer.
  CHECK(s.Send("GET", "/healthz").status == 200);
}

TEST_CASE("FailureLimiter counts per address in fixed windows",
          "[http][auth]") {
  http_internal::FailureLimiter limiter(2, absl::Minutes(1));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  CHECK(limiter.Blocked("a", t0) == absl::ZeroDuration());
  limiter.RecordFailure("a", t0);
  CHECK(limiter.Blocked("a", t0) == absl::ZeroDuration());
  limiter.RecordFailure("a", t0 + absl::Seconds(10));
  CHECK(limiter.Blocked("a", t0 + absl::Seconds(20)) == absl::Seconds(40));
  CHECK(limiter.Blocked("b", t0 + absl::Seconds(20)) == absl::ZeroDuration());
  CHECK(limiter.Blocked("a", t0 + absl::Seconds(60)) == absl::ZeroDuration());
  limiter.RecordFailure("a", t0 + absl::Seconds(61));
  CHECK(limiter.Blocked("a", t0 + absl::Seconds(61)) == absl::ZeroDuration());
}

TEST_CASE("With authentication on, every route must declare its access",
          "[http][auth]") {
  FixedAuthenticator authenticator(FixedAuthenticator::Answer::kCached);
  Router router;
  router.Add(
      "GET", "/open", [](const Request&) { return JsonResponse(200, "{}"); },
      Open());
  router.Add("GET", "/forgotten",
             [](const Request&) { return JsonResponse(200, "{}"); });
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.auth.authenticator = &authenticator;
  auto server = Server::Create(options, &router);
  REQUIRE_FALSE(server.ok());
  CHECK(server.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(server.status().message(), "GET /forgotten"));
  // Without authentication the same router serves.
  options.auth.authenticator = nullptr;
  CHECK(Server::Create(options, &router).ok());
}

TEST_CASE("The access log names the key, never the token", "[http][auth]") {
  LogCapture capture;
  AuthServer s;
  CHECK(s.Send("GET", "/things", Bearer("tok-k1")).status == 200);
  CHECK(s.Send("GET", "/things", Bearer("tok-secret-guess")).status == 401);
  REQUIRE(capture.WaitForLine({"status=200", "actor=k1"}).has_value());
  REQUIRE(capture.WaitForLine({"status=401", "actor=-"}).has_value());
  for (const std::string& line : capture.Lines()) {
    CHECK_FALSE(absl::StrContains(line, "tok-"));
  }
}

TEST_CASE("IsLoopbackListenAddress", "[http][auth]") {
  CHECK(*IsLoopbackListenAddress("127.0.0.1:8080"));
  CHECK(*IsLoopbackListenAddress("127.1.2.3:0"));
  CHECK(*IsLoopbackListenAddress("[::1]:80"));
  CHECK(*IsLoopbackListenAddress("localhost:80"));
  CHECK_FALSE(*IsLoopbackListenAddress("0.0.0.0:8080"));
  CHECK_FALSE(*IsLoopbackListenAddress(":8080"));
  CHECK_FALSE(*IsLoopbackListenAddress("[::]:8080"));
  CHECK_FALSE(*IsLoopbackListenAddress("10.1.2.3:8080"));
  CHECK_FALSE(IsLoopbackListenAddress("nonsense").ok());
}

}  // namespace
}  // namespace http
}  // namespace cqrs
