#include "tests/example_app/service_fixture.h"

#include <chrono>
#include <future>
#include <memory>
#include <utility>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "example_app/bank_app.h"
#include "framework/http/message.h"
#include "framework/http/router.h"
#include "tests/support/api_key.h"

namespace bank {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

const http::HeaderList kJson = {{"Content-Type", "application/json"}};

ServiceFixture::ServiceFixture(Projections projections,
                               BeforeCommit before_commit,
                               Configure configure) {
  DeclareBank(app_);
  REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
  cqrs::ServeOptions options;
  options.schema = schema_.name();
  options.worker_threads = 8;
  options.run_projections = projections == Projections::kHere;
  options.poll_interval = absl::Milliseconds(200);
  options.before_commit_for_testing = std::move(before_commit);
  if (configure) configure(options);
  auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  server_ = *std::move(server);
  token_ = cqrs::testing::CreateToken(schema_.pool(), schema_.name());
}

ServiceFixture::~ServiceFixture() { server_->Stop(); }

std::unique_ptr<TestClient> ServiceFixture::Client() {
  auto client = TestClient::Connect(server_->port());
  REQUIRE(client.ok());
  (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
  return *std::move(client);
}

ClientResponse ServiceFixture::Send(const std::string& method,
                                    const std::string& target,
                                    const std::string& body,
                                    const http::HeaderList& headers) {
  if (client_ == nullptr) client_ = Client();
  auto r = client_->Send(method, target, body, headers);
  if (!r.ok()) {  // the server closed the connection: once more
    client_ = Client();
    r = client_->Send(method, target, body, headers);
  }
  REQUIRE(r.ok());
  return *std::move(r);
}

ClientResponse ServiceFixture::Get(const std::string& target,
                                   const http::HeaderList& headers) {
  return Send("GET", target, "", headers);
}

ClientResponse ServiceFixture::Post(const std::string& target,
                                    const std::string& body) {
  return Send("POST", target, body, kJson);
}

http::Response ServiceFixture::SendAs(const http::Principal& principal,
                                      const std::string& method,
                                      const std::string& target,
                                      const std::string& body,
                                      const http::HeaderList& headers) {
  http::HeaderList all = headers;
  if (method == "POST") all.insert(all.end(), kJson.begin(), kJson.end());
  auto request = http::Request::Create(method, target, std::move(all), body);
  REQUIRE(request.ok());
  http::RouteMatch match = router().Match(method, request->raw_path());
  REQUIRE(match.result == http::RouteMatch::Result::kFound);
  request->set_path_params(match.params);
  request->set_route_pattern(match.route->pattern);
  request->set_principal(principal);
  if (match.route->handler) return match.route->handler(*request);
  REQUIRE(match.route->async_handler);
  // Shared with the responder, which may outlive a failed wait here.
  auto answered = std::make_shared<std::promise<http::Response>>();
  std::future<http::Response> answer = answered->get_future();
  match.route->async_handler(
      *request, http::Responder([answered](http::Response response) {
        answered->set_value(std::move(response));
      }));
  // The query service answers within its longest read-your-writes wait.
  REQUIRE(answer.wait_for(std::chrono::seconds(60)) ==
          std::future_status::ready);
  return answer.get();
}

rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  REQUIRE(!doc.HasParseError());
  return doc;
}

std::string ErrorCode(const ClientResponse& r) {
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["code"].GetString();
}

std::string Open(ServiceFixture& f, const std::string& id,
                 const std::string& owner, const std::string& currency) {
  auto r = f.Post("/accounts",
                  absl::StrCat(R"({"owner":")", owner, R"(","currency":")",
                               currency, R"(","account_id":")", id, R"("})"));
  REQUIRE(r.status == 201);
  return Parse(r.body)["position"].GetString();
}

Moved Deposit(ServiceFixture& f, const std::string& id, int64_t amount) {
  auto r = f.Post(absl::StrCat("/accounts/", id, "/deposit"),
                  absl::StrCat(R"({"amount":)", amount, "}"));
  REQUIRE(r.status == 200);
  rapidjson::Document doc = Parse(r.body);
  return {doc["position"].GetString(), doc["balance"].GetInt64()};
}

http::HeaderList AtLeast(const std::string& position) {
  return {{"X-Min-Position", position}};
}

}  // namespace bank
