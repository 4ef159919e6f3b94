// Fuzzes the way the server reads a request: the raw bytes go through
// Beast's request_parser (with the server's default header and body limits),
// then Request::Create() and Router::Match() on a router with a few routes,
// as framework/http/server.cc does, and a matched route's handler runs.
//
// Properties: nothing crashes or leaks; a request whose target, header names
// or values or body hold a NUL byte is refused by Request::Create(); an
// accepted request has no NUL in its decoded path, query or path
// parameters (handlers never see U+0000).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "boost/beast/core/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/string_body.hpp"
#include "framework/http/message.h"
#include "framework/http/router.h"
#include "framework/http/server.h"

namespace {

namespace bhttp = boost::beast::http;
using cqrs::http::Request;
using cqrs::http::Response;
using cqrs::http::RouteMatch;
using cqrs::http::Router;

bool HasNul(absl::string_view text) {
  return text.find('\0') != absl::string_view::npos;
}

void Require(bool condition) {
  if (!condition) std::abort();
}

const Router& FuzzRouter() {
  static const Router* router = [] {
    auto* r = new Router();
    auto echo = [](const Request& request) {
      Response response;
      for (const auto& [name, value] : request.path_params()) {
        Require(!HasNul(name) && !HasNul(value));
        response.body += value;
      }
      return response;
    };
    r->Add("GET", "/healthz", echo);
    r->Add("GET", "/accounts/{id}", echo);
    r->Add("POST", "/accounts/{id}/deposit", echo);
    r->Add("GET", "/streams/{category}/{id}/events", echo);
    r->Add("DELETE", "/webhooks/{id}", echo);
    Require(r->status().ok());
    return r;
  }();
  return *router;
}

std::string ToString(boost::beast::string_view text) {
  return std::string(text.data(), text.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const cqrs::http::ServerOptions defaults;
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(defaults.header_limit));
  parser.body_limit(defaults.body_limit);
  parser.eager(true);
  boost::beast::error_code error;
  parser.put(boost::asio::buffer(data, size), error);
  if (!error && !parser.is_done()) parser.put_eof(error);
  if (error || !parser.is_done()) return 0;

  auto message = parser.release();
  bool has_nul = HasNul(ToString(message.target())) || HasNul(message.body());
  cqrs::http::HeaderList headers;
  for (const auto& field : message) {
    headers.emplace_back(ToString(field.name_string()),
                         ToString(field.value()));
    has_nul = has_nul || HasNul(headers.back().first) ||
              HasNul(headers.back().second);
  }
  absl::StatusOr<Request> request = Request::Create(
      ToString(message.method_string()), ToString(message.target()),
      std::move(headers), std::move(message.body()));
  if (!request.ok()) return 0;
  Require(!has_nul);
  Require(!HasNul(request->path()));
  for (const auto& [name, value] : request->query_params()) {
    Require(!HasNul(name) && !HasNul(value));
  }

  RouteMatch match = FuzzRouter().Match(request->method(), request->raw_path());
  if (match.result == RouteMatch::Result::kFound) {
    Require(match.route != nullptr);
    request->set_path_params(std::move(match.params));
    match.route->handler(*request);
  }
  return 0;
}
