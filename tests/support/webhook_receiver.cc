#include "tests/support/webhook_receiver.h"

#include <utility>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"

namespace cqrs::testing {

WebhookReceiver::WebhookReceiver() : log_level_(GetMinLogLevel()) {
  SetMinLogLevel(LogLevel::kWarn);
  router_.Add("POST", "/hook", [this](const http::Request& request) {
    {
      absl::MutexLock lock(&mu_);
      ids_.insert(std::string(request.Header("webhook-id").value_or("")));
      ++posts_;
    }
    http::Response response;
    response.status = 204;
    return response;
  });
  http::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  auto server = http::Server::Create(options, &router_);
  REQUIRE(server.ok());
  server_ = *std::move(server);
  REQUIRE(server_->Start().ok());
}

WebhookReceiver::~WebhookReceiver() {
  server_.reset();
  SetMinLogLevel(log_level_);
}

std::string WebhookReceiver::Url() const {
  return absl::StrCat("http://127.0.0.1:", server_->port(), "/hook");
}

std::set<std::string> WebhookReceiver::Ids() const {
  absl::MutexLock lock(&mu_);
  return ids_;
}

int64_t WebhookReceiver::Posts() const {
  absl::MutexLock lock(&mu_);
  return posts_;
}

}  // namespace cqrs::testing
