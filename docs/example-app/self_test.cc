#include "self_test.h"

#include <exception>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <pqxx/pqxx>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "framework/pg_pool.h"
#include "framework/status_macros.h"
#include "rapidjson/document.h"

namespace counter_app {
namespace {

namespace beast = boost::beast;
using tcp = boost::asio::ip::tcp;

struct Reply {
  int status = 0;
  std::string body;
};

// One request on a fresh connection.
absl::StatusOr<Reply> Send(
    int port, beast::http::verb method, const std::string& target,
    const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  try {
    boost::asio::io_context io;
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                 static_cast<unsigned short>(port)));
    beast::http::request<beast::http::string_body> request(method, target, 11);
    request.set(beast::http::field::host, "127.0.0.1");
    if (!body.empty()) {
      request.set(beast::http::field::content_type, "application/json");
      request.body() = body;
    }
    for (const auto& [name, value] : headers) request.set(name, value);
    request.prepare_payload();
    beast::http::write(socket, request);
    beast::flat_buffer buffer;
    beast::http::response<beast::http::string_body> response;
    beast::http::read(socket, buffer, response);
    return Reply{static_cast<int>(response.result_int()), response.body()};
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(target, ": ", e.what()));
  }
}

absl::Status Unexpected(absl::string_view what, const Reply& reply) {
  return absl::InternalError(
      absl::StrCat(what, " answered ", reply.status, ": ", reply.body));
}

}  // namespace

absl::Status RunSelfTest(int port) {
  ASSIGN_OR_RETURN(Reply command,
                   Send(port, beast::http::verb::post,
                        "/counters/self-test/increment", R"({"by":2})", {}));
  rapidjson::Document doc;
  doc.Parse(command.body.c_str());
  if (command.status != 200 || !doc.IsObject() || !doc.HasMember("position") ||
      !doc["position"].IsString()) {
    return Unexpected("POST /counters/self-test/increment", command);
  }
  const std::string position = doc["position"].GetString();

  // Read our own write: waits until the projection has applied it.
  ASSIGN_OR_RETURN(Reply query,
                   Send(port, beast::http::verb::get, "/counters/self-test", "",
                        {{"X-Min-Position", position}}));
  if (query.status != 200 || query.body != R"({"id":"self-test","value":2})") {
    return Unexpected("GET /counters/self-test", query);
  }
  return absl::OkStatus();
}

absl::Status DropSchema(const std::string& url, const std::string& schema) {
  cqrs::PgPoolOptions options;
  options.conninfo = url;
  options.max_connections = 1;
  ASSIGN_OR_RETURN(auto pool, cqrs::PgPool::Create(options));
  return pool->Run(cqrs::PgPool::Retry::kNever, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec0(absl::StrCat("DROP SCHEMA IF EXISTS ", tx.quote_name(schema),
                          " CASCADE"));
    return absl::OkStatus();
  });
}

}  // namespace counter_app
